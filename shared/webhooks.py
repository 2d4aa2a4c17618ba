"""The webhook store: each change writes the row and its `hookline.webhooks` record in one
transaction, through the outbox, so the matcher and senders see every change in order."""

from __future__ import annotations

import secrets as _random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.core.errors import BlockedTarget, Conflict, NotFound, ResolveFailed, ValidationError
from shared.core.events import format_timestamp
from shared.core.messages import WebhookRecord
from shared.core.signing import generate_secret
from shared.core.ssrf import Allowlist, validate_url
from shared.core.webhooks import MASK, LastDelivery, Webhook, validate_fields
from shared.crypto import SecretBox
from shared.db import translated
from shared.kafka import WEBHOOKS
from shared.netguard import checked_addresses
from shared.notices import emit_notice
from shared.outbox import enqueue

ROTATION_GRACE = timedelta(hours=24)
_COLUMNS = (
    "id, org, repo, url, events, active, content_type, description, retry, timeout_s,"
    " secret_enc, previous_secret_enc, previous_expires_at, disabled_reason, version,"
    " created_at, updated_at, headers, notify_email, disabled_at"
)
_INSERT = (
    "INSERT INTO webhooks (id, org, repo, url, events, active, content_type, description,"
    " retry, timeout_s, secret_enc, headers, notify_email, disabled_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
    f" CASE WHEN $6 THEN NULL ELSE now() END) RETURNING {_COLUMNS}"
)

# Each webhook's health: its failure count and its newest delivery (one probe of
# deliveries_by_webhook per webhook). The console's lists read the same.
HEALTH = """
SELECT v.id, h.consecutive_failures, h.last_error, d.status, d.last_at, d.last_status
FROM unnest($1::uuid[]) AS v(id)
LEFT JOIN webhook_health h ON h.webhook_id = v.id
LEFT JOIN LATERAL (SELECT status, last_at, last_status FROM deliveries
                   WHERE webhook_id = v.id ORDER BY first_at DESC, id DESC LIMIT 1) d ON true
"""


async def _with_health(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Webhook]:
    """The webhooks of `rows`, each with its failure count and newest delivery."""
    if not rows:
        return []
    health = {r["id"]: r for r in await conn.fetch(HEALTH, [row["id"] for row in rows])}
    out = []
    for row in rows:
        h = health.get(row["id"])
        last = None
        if h is not None and h["status"] is not None:
            last = LastDelivery(h["status"], h["last_at"], h["last_status"])
        failures = (h["consecutive_failures"] or 0) if h is not None else 0
        out.append(replace(_webhook(row), failure_count=failures, last_delivery=last))
    return out


def _shared_columns(row: asyncpg.Record) -> dict[str, Any]:
    """What a webhook as the API shows it and as the workers get it both take from its row."""
    return {
        "id": str(row["id"]),
        "org": row["org"],
        "repo": row["repo"],
        "url": row["url"],
        "events": tuple(row["events"]),
        "active": row["active"],
        "content_type": row["content_type"],
        "retry": row["retry"],
        "timeout_s": row["timeout_s"],
    }


def _webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        **_shared_columns(row),
        description=row["description"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        header_names=tuple(row["headers"] or {}),
        notify_email=row["notify_email"],
        disabled_at=row["disabled_at"],
    )


def _record(row: asyncpg.Record) -> WebhookRecord:
    prev = row["previous_secret_enc"]
    return WebhookRecord(
        **_shared_columns(row),
        secret_enc=bytes(row["secret_enc"]).decode(),
        previous_secret_enc=bytes(prev).decode() if prev is not None else None,
        previous_expires_at=(
            format_timestamp(row["previous_expires_at"]) if row["previous_expires_at"] else None
        ),
        revision=row["version"],
        headers=dict(row["headers"] or {}),
    )


@dataclass(frozen=True)
class ScopeLimit:
    """How many rows of `table` a repo, or an org's org-level scope, may hold: the org's
    own limit (org_limits) or else these defaults."""

    table: str
    what: str  # the rows, as the 409 names them
    per_repo: int
    per_org: int
    lock_prefix: str = ""  # of the scope's advisory lock

    @asynccontextmanager
    async def creating(
        self, pool: asyncpg.Pool, org: str, repo: str | None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which the scope has room for one more row (checked under its
        lock, held to the end)."""
        async with pool.acquire() as conn, conn.transaction():
            await self.lock_and_check(conn, org, repo)
            yield conn

    async def lock_and_check(self, conn: asyncpg.Connection, org: str, repo: str | None) -> None:
        """Serialises creations in the scope (an advisory lock held to the transaction's end,
        so that the limit holds under concurrency); 409 when the scope is already full."""
        scope = f"{self.lock_prefix}{org}/{repo}"
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", scope)
        column = "max_webhooks_per_repo" if repo is not None else "max_org_webhooks"
        own = await conn.fetchval(f"SELECT {column} FROM org_limits WHERE org = $1", org)
        limit = own if own is not None else (self.per_repo if repo is not None else self.per_org)
        alive = " AND deleted_at IS NULL" if self.table == "inbound_webhooks" else ""
        count = await conn.fetchval(
            f"SELECT count(*) FROM {self.table} WHERE org = $1"
            f" AND repo IS NOT DISTINCT FROM $2{alive}",
            org,
            repo,
        )
        if count >= limit:
            where = f"{org}/{repo}" if repo is not None else f"org {org} (org-level)"
            raise Conflict(
                f"{where} already has {count} {self.what} (the limit is {limit}); delete one first"
            )


@dataclass(frozen=True)
class Rotation:
    secret: str
    previous_expires_at: datetime


async def _lock_health(conn: asyncpg.Connection, webhook_id: str) -> None:
    """Locks the webhook's health row, if any, before its webhook row: the delivery log
    takes them in that order (a failure streak, then the notice's counter on the
    webhook), so a transaction taking both the other way round could deadlock with it."""
    with suppress(ValueError):  # not an id: the fetch after answers 404
        await conn.execute(
            "SELECT 1 FROM webhook_health WHERE webhook_id = $1 FOR UPDATE",
            uuid.UUID(str(webhook_id)),
        )


class WebhookStore:
    """Create, read, update, delete, rotate and disable webhooks, tenant-scoped.

    `org=None` is the admin's view (every org); otherwise another org's webhook is NotFound.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: SecretBox,
        *,
        allow: Allowlist,
        max_per_repo: int,
        max_org: int = 20,
        header_prefix: str = "X-Hookline",
    ) -> None:
        self._pool = pool
        self._box = box
        self._header_prefix = header_prefix  # custom headers may not replace its headers
        self._allow = allow
        self._limit = ScopeLimit("webhooks", "webhooks", per_repo=max_per_repo, per_org=max_org)

    async def _check_target(self, url: str) -> None:
        target = validate_url(url)  # the host the sender will look up, normalised as it will
        try:
            await checked_addresses(target.host, target.port, self._allow)
        except BlockedTarget:
            # Not which address, nor its kind: that would map the internal network.
            raise ValidationError(
                "url is not allowed: its host resolves to a non-public address", field="url"
            ) from None
        except ResolveFailed as exc:
            raise ValidationError(f"url host does not resolve: {exc}", field="url") from None

    async def _publish(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        await enqueue(conn, topic=WEBHOOKS, key=str(row["id"]), value=_record(row).encode())

    @translated
    async def create(self, org: str, repo: str | None, body: object) -> tuple[Webhook, str]:
        """Validates and stores a webhook; returns it with its secret (shown only now)."""
        fields = validate_fields(body, partial=False, header_prefix=self._header_prefix)
        await self._check_target(fields["url"])
        headers = self._seal_headers(fields.get("headers") or {}, {})
        secret = fields.pop("secret", None) or generate_secret(_random.token_bytes(32))
        async with self._limit.creating(self._pool, org, repo) as conn:
            row = await conn.fetchrow(
                _INSERT,
                uuid.uuid4(),
                org,
                repo,
                fields["url"],
                fields["events"],
                fields.get("active", True),
                fields.get("content_type", "json"),
                fields.get("description", ""),
                fields.get("retry"),
                fields.get("timeout_s", 10),
                self._box.seal(secret),
                headers,
                fields.get("notify_email"),
            )
            await self._publish(conn, row)
        return _webhook(row), secret

    def _seal_headers(self, given: dict[str, str], held: dict[str, str]) -> dict[str, str]:
        """Each value sealed; a masked value (as a read shows it) keeps the one `held`."""
        sealed: dict[str, str] = {}
        for name, value in given.items():
            if value == MASK:
                kept = next((v for k, v in held.items() if k.lower() == name.lower()), None)
                if kept is None:
                    raise ValidationError(
                        f"headers: {name} has no value to keep; give its value", field="headers"
                    )
                sealed[name] = kept
            else:
                sealed[name] = self._box.seal(value).decode()
        return sealed

    async def _fetch(
        self, conn: asyncpg.Connection, webhook_id: str, org: str | None, *, lock: bool = False
    ) -> asyncpg.Record:
        try:
            wid = uuid.UUID(str(webhook_id))
        except ValueError:
            raise NotFound("webhook not found") from None
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1" + (" FOR UPDATE" if lock else ""), wid
        )
        if row is None or (org is not None and row["org"] != org):
            raise NotFound("webhook not found")
        return row

    @translated
    async def get(self, webhook_id: str, org: str | None) -> Webhook:
        """The webhook with its health (failure count, newest delivery)."""
        async with self._pool.acquire() as conn:
            (webhook,) = await _with_health(conn, [await self._fetch(conn, webhook_id, org)])
            return webhook

    @translated
    async def record(self, webhook_id: str) -> WebhookRecord | None:
        """The delivery-side view (encrypted secrets), or None if it does not exist."""
        async with self._pool.acquire() as conn:
            try:
                return _record(await self._fetch(conn, webhook_id, None))
            except NotFound:
                return None

    @translated
    async def list(self, org: str, repo: str | None) -> list[Webhook]:
        """A repo's webhooks, or an org's org-level ones when repo is None."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM webhooks WHERE org = $1 AND repo IS NOT DISTINCT FROM $2"
                " ORDER BY created_at, id",
                org,
                repo,
            )
            return await _with_health(conn, list(rows))

    @translated
    async def update(self, webhook_id: str, org: str | None, body: object) -> Webhook:
        fields = validate_fields(body, partial=True, header_prefix=self._header_prefix)
        if "url" in fields:
            await self._check_target(fields["url"])
        async with self._pool.acquire() as conn, conn.transaction():
            if fields.get("active") is True:
                await _lock_health(conn, webhook_id)
            current = await self._fetch(conn, webhook_id, org, lock=True)
            if "headers" in fields:  # replaced whole; "••••" keeps a value held
                fields["headers"] = self._seal_headers(
                    fields["headers"], dict(current["headers"] or {})
                )
            sets: list[str] = []
            args: list[Any] = []
            for name, value in fields.items():
                args.append(value)
                sets.append(f"{name} = ${len(args)}")
            last_error = None
            if fields.get("active") is True:
                # Re-enabling clears the reason and the failure count.
                sets += ["disabled_reason = NULL", "disabled_at = NULL"]
                last_error = await conn.fetchval(
                    "DELETE FROM webhook_health WHERE webhook_id = $1 RETURNING last_error",
                    uuid.UUID(webhook_id),
                )
            elif fields.get("active") is False and current["active"]:
                sets.append("disabled_at = now()")
            args.append(uuid.UUID(webhook_id))
            sets += ["version = version + 1", "updated_at = now()"]
            row = await conn.fetchrow(
                f"UPDATE webhooks SET {', '.join(sets)}"
                f" WHERE id = ${len(args)} RETURNING {_COLUMNS}",
                *args,
            )
            await self._publish(conn, row)
            if fields.get("active") is True and not current["active"]:
                # The row is locked (FOR UPDATE above): this transition commits once.
                await emit_notice(
                    conn,
                    kind="enabled",
                    webhook_id=webhook_id,
                    reason="re-enabled",
                    failure_count=0,
                    last_error=last_error,
                )
            (webhook,) = await _with_health(conn, [row])
        return webhook

    @translated
    async def delete(self, webhook_id: str, org: str | None) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_health(conn, webhook_id)
            row = await self._fetch(conn, webhook_id, org, lock=True)
            await conn.execute("DELETE FROM webhooks WHERE id = $1", row["id"])
            await conn.execute("DELETE FROM webhook_health WHERE webhook_id = $1", row["id"])
            await enqueue(conn, topic=WEBHOOKS, key=str(row["id"]), value=None)  # tombstone

    @translated
    async def rotate(
        self, webhook_id: str, org: str | None, *, now: datetime | None = None
    ) -> Rotation:
        """A new secret; the old one keeps signing (Standard Webhooks header) for 24 h."""
        secret = generate_secret(_random.token_bytes(32))
        expires = (now or datetime.now(UTC)) + ROTATION_GRACE
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fetch(conn, webhook_id, org, lock=True)
            row = await conn.fetchrow(
                f"UPDATE webhooks SET previous_secret_enc = secret_enc, secret_enc = $2,"
                f" previous_expires_at = $3, version = version + 1, updated_at = now()"
                f" WHERE id = $1 RETURNING {_COLUMNS}",
                uuid.UUID(webhook_id),
                self._box.seal(secret),
                expires,
            )
            await self._publish(conn, row)
        return Rotation(secret=secret, previous_expires_at=expires)

    @translated
    async def disable(self, webhook_id: str, reason: str) -> bool:
        """Turns a webhook off (sender: too many failures, or 410) and emits its
        `webhook.disabled`, in one transaction; False (and no notice) if already off."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE webhooks SET active = false, disabled_reason = $2, disabled_at = now(),"
                f" version = version + 1, updated_at = now() WHERE id = $1 AND active"
                f" RETURNING {_COLUMNS}",
                uuid.UUID(webhook_id),
                reason,
            )
            if row is None:
                return False
            await self._publish(conn, row)
            health = await conn.fetchrow(
                "SELECT consecutive_failures, last_error FROM webhook_health WHERE webhook_id = $1",
                row["id"],
            )
            await emit_notice(
                conn,
                kind="disabled",
                webhook_id=webhook_id,
                reason=reason,
                failure_count=health["consecutive_failures"] if health else 0,
                last_error=health["last_error"] if health else None,
            )
        return True
