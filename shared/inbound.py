"""Inbound webhooks in PostgreSQL: the management store, the invocation log's reads, and the
lookup of a hook for one call. The call path itself is shared/inbound_calls.py."""

from __future__ import annotations

import builtins
import secrets as _random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.core.errors import NotFound
from shared.core.events import format_timestamp
from shared.core.inbound import DEFAULT_EVENT, ID_RANDOM_BYTES, is_inbound_id, new_inbound_id
from shared.core.inbound import validate_inbound_fields as validate_fields
from shared.core.signing import generate_secret
from shared.crypto import OpenedSecrets, SecretBox
from shared.db import from_columns
from shared.webhooks import ScopeLimit

_COLUMNS = (
    "h.id, h.org, h.repo, h.name, h.target, h.event, h.verify, h.active, h.created_at, h.updated_at"
)
# The newest accepted call; read from the invocations' (hook, received_at DESC) index.
_LAST_TRIGGERED = (
    "(SELECT max(i.received_at) FROM inbound_invocations i"
    " WHERE i.inbound_webhook_id = h.id AND i.result = 'accepted') AS last_triggered_at"
)
_INSERT = (
    "INSERT INTO inbound_webhooks AS h (id, org, repo, name, target, event, verify, secret_enc,"
    " active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    f" RETURNING {_COLUMNS}, NULL::timestamptz AS last_triggered_at"
)
_INVOCATION_COLUMNS = (
    "id, inbound_webhook_id, org, received_at, source_ip, headers, body, result, status,"
    " event_id, error, test"
)


@dataclass(frozen=True)
class InboundFields:
    """What an inbound webhook is, to its owner and to the public edge alike."""

    id: str
    org: str
    repo: str | None
    name: str
    target: str | None
    event: str
    verify: str
    active: bool


@dataclass(frozen=True)
class InboundWebhook(InboundFields):
    """An inbound webhook as its owner sees it (never its secret)."""

    created_at: datetime
    updated_at: datetime
    last_triggered_at: datetime | None

    def to_api(self, public_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": {"org": self.org, "repo": self.repo},
            "target": self.target,
            "event": self.event,
            "verify": self.verify,
            "active": self.active,
            "url": f"{public_url}/hooks/in/{self.id}",
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
            "last_triggered_at": (
                format_timestamp(self.last_triggered_at) if self.last_triggered_at else None
            ),
        }


@dataclass(frozen=True)
class CallTarget(InboundFields):
    """What the public edge needs to judge one call: the hook with its secret opened."""

    secret: str


@dataclass(frozen=True)
class Invocation:
    id: str
    received_at: datetime
    source_ip: str | None
    headers: dict[str, str] | None
    body: str | None
    result: str
    status: int
    event_id: str | None
    error: str | None
    test: bool


def _hook(row: asyncpg.Record) -> InboundWebhook:
    return from_columns(InboundWebhook, row)


def call_target(row: asyncpg.Record, box: SecretBox | OpenedSecrets) -> CallTarget:
    """The hook a call names, its secret opened, from a row of its columns."""
    return from_columns(CallTarget, row, secret=box.open(row["secret_enc"]))


def _invocation(row: asyncpg.Record) -> Invocation:
    return from_columns(Invocation, row, id=str(row["id"]))


class InboundStore:
    """Create, read, change, delete and rotate inbound webhooks, tenant-scoped (`org` None
    is the admin's view); and the lookup the public edge makes on every call."""

    def __init__(
        self, pool: asyncpg.Pool, box: SecretBox, *, max_per_scope: int, max_org: int = 20
    ) -> None:
        self._pool = pool
        self._box = box
        self._limit = ScopeLimit(
            "inbound_webhooks",
            "inbound webhooks",
            per_repo=max_per_scope,
            per_org=max_org,
            lock_prefix="inbound:",
        )

    async def create(self, org: str, repo: str | None, body: object) -> tuple[InboundWebhook, str]:
        """Validates and stores an inbound webhook; returns it with its secret (shown now)."""
        fields = validate_fields(body, partial=False)
        secret = fields.pop("secret", None) or generate_secret(_random.token_bytes(32))
        async with self._limit.creating(self._pool, org, repo) as conn:
            row = await conn.fetchrow(
                _INSERT,
                new_inbound_id(_random.token_bytes(ID_RANDOM_BYTES)),
                org,
                repo,
                fields["name"],
                fields.get("target"),
                fields.get("event", DEFAULT_EVENT),
                fields.get("verify", "secret_header"),
                self._box.seal(secret),
                fields.get("active", True),
            )
        return _hook(row), secret

    async def _fetch(
        self, conn: asyncpg.Connection, hook_id: str, org: str | None, *, lock: bool = False
    ) -> asyncpg.Record:
        if not is_inbound_id(hook_id):
            raise NotFound("inbound webhook not found")
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS}, {_LAST_TRIGGERED} FROM inbound_webhooks h"
            " WHERE h.id = $1 AND h.deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
            hook_id,
        )
        if row is None or (org is not None and row["org"] != org):
            raise NotFound("inbound webhook not found")
        return row

    async def get(self, hook_id: str, org: str | None) -> InboundWebhook:
        async with self._pool.acquire() as conn:
            return _hook(await self._fetch(conn, hook_id, org))

    async def list(self, org: str, repo: str | None) -> list[InboundWebhook]:
        """A repo's inbound webhooks, or an org's org-level ones when repo is None."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS}, {_LAST_TRIGGERED} FROM inbound_webhooks h WHERE h.org = $1"
            " AND h.repo IS NOT DISTINCT FROM $2 AND h.deleted_at IS NULL"
            " ORDER BY h.created_at, h.id",
            org,
            repo,
        )
        return [_hook(r) for r in rows]

    async def update(self, hook_id: str, org: str | None, body: object) -> InboundWebhook:
        fields = validate_fields(body, partial=True)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fetch(conn, hook_id, org, lock=True)
            args: list[Any] = []
            sets: list[str] = []
            for name, value in fields.items():
                args.append(value)
                sets.append(f"{name} = ${len(args)}")
            args.append(hook_id)
            sets.append("updated_at = now()")
            row = await conn.fetchrow(
                f"UPDATE inbound_webhooks h SET {', '.join(sets)} WHERE h.id = ${len(args)}"
                f" RETURNING {_COLUMNS}, {_LAST_TRIGGERED}",
                *args,
            )
        return _hook(row)

    async def delete(self, hook_id: str, org: str | None) -> None:
        """Deletes for good: the URL answers 404 from now on, and the id is never reused."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fetch(conn, hook_id, org, lock=True)
            await conn.execute(
                "UPDATE inbound_webhooks SET deleted_at = now(), active = false,"
                " secret_enc = '\\x'::bytea, updated_at = now() WHERE id = $1",
                hook_id,
            )

    async def rotate(self, hook_id: str, org: str | None) -> str:
        """A new secret, in force at once (the old one stops working)."""
        secret = generate_secret(_random.token_bytes(32))
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fetch(conn, hook_id, org, lock=True)
            await conn.execute(
                "UPDATE inbound_webhooks SET secret_enc = $2, updated_at = now() WHERE id = $1",
                hook_id,
                self._box.seal(secret),
            )
        return secret

    async def ping(self) -> None:
        """Raises unless the database answers."""
        await self._pool.fetchval("SELECT 1")

    async def for_call(self, hook_id: str) -> CallTarget | None:
        """The hook a call names, secret opened; None if unknown or deleted."""
        if not is_inbound_id(hook_id):
            return None
        row = await self._pool.fetchrow(
            "SELECT id, org, repo, name, target, event, verify, active, secret_enc"
            " FROM inbound_webhooks WHERE id = $1 AND deleted_at IS NULL",
            hook_id,
        )
        return None if row is None else call_target(row, self._box)

    async def invocations(
        self,
        hook_id: str,
        *,
        result: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> builtins.list[Invocation]:
        """A hook's invocations, newest first, `limit` of them after the keyset `after`."""
        where = ["inbound_webhook_id = $1"]
        args: list[Any] = [hook_id]
        for clause, value in (
            ("result = ${}", result),
            ("received_at >= ${}", since),
            ("received_at < ${}", until),
        ):
            if value is not None:
                args.append(value)
                where.append(clause.format(len(args)))
        if after is not None:
            args += [after[0], uuid.UUID(after[1])]
            where.append(f"(received_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {_INVOCATION_COLUMNS} FROM inbound_invocations WHERE {' AND '.join(where)}"
            f" ORDER BY received_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_invocation(r) for r in rows]

    async def invocation(self, hook_id: str, invocation_id: str) -> Invocation | None:
        """One invocation of a hook, or None (an id that is not a UUID is none)."""
        try:
            ident = uuid.UUID(invocation_id)
        except ValueError:
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_INVOCATION_COLUMNS} FROM inbound_invocations"
            " WHERE inbound_webhook_id = $1 AND id = $2",
            hook_id,
            ident,
        )
        return None if row is None else _invocation(row)
