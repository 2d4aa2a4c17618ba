"""The inbound call path in PostgreSQL, batched: the gate that looks calls' hooks up and
counts them against the shared rate limits, and the log that records each call with, when
it was accepted, its event's outbox row in the same statement.

Both batch concurrent calls (shared/batching.py), each batch on a connection its worker
holds: one round trip, and one commit, serves every call that arrived while the previous
one was out. An answer is sent only after its batch committed, so a 202 is as durable as
with one transaction per call.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from shared.batching import SessionBatcher
from shared.core.errors import Unstorable
from shared.core.ids import random_uuid
from shared.core.inbound import inbound_payload, is_inbound_id
from shared.core.messages import EventMessage, make_event
from shared.crypto import OpenedSecrets, SecretBox
from shared.db import translated
from shared.inbound import CallTarget, call_target
from shared.kafka import EVENTS
from shared.outbox import OutboxWaker
from shared.ratelimit import Refusal, counted

IDEMPOTENCY_HOURS = 24
# Batches out at once per stage. The gate's batches all update the same rate-limit rows
# (the hook's and its org's), so a second one would only wait for the first's row locks:
# one at a time, each as large as the calls that came meanwhile. The log's wait for their
# commit's WAL flush, so a second is on its way meanwhile. Fewer batches out, larger each,
# cost the edge less CPU per call. Measured with 32 clients on one edge, relays paused, in
# 8 s windows without steal: a gate of 1 gave 2,436-3,049 calls/s (268-339 us of the
# edge's CPU per call) with a log of 2 or 4; 4 and 4 gave 1,845-2,452 (341-444 us).
GATE_IN_FLIGHT = 1
LOG_IN_FLIGHT = 2
_HOOK_KEY = "'inbound:hook:' || h.id"
_ORG_KEY = "'inbound:org:' || h.org"


@dataclass(frozen=True)
class Call:
    """One call as the invocation log records it."""

    id: str
    received_at: datetime
    source_ip: str | None
    headers: dict[str, str]
    body: str | None  # None: refused before the body was read
    test: bool = False


def call_event(hook: CallTarget, call: Call, data: dict[str, Any]) -> EventMessage:
    """The event an accepted call becomes: the hook's type and scope (an org-level hook
    emits an org event), the payload of DESIGN.md section 9."""
    payload = inbound_payload(
        data,
        target=hook.target,
        webhook_id=hook.id,
        name=hook.name,
        invocation_id=call.id,
        source_ip=call.source_ip,
        received_at=call.received_at,
    )
    return make_event(
        org=hook.org,
        repo=hook.repo,
        event=hook.event,
        payload=payload,
        event_id=random_uuid(),
        created_at=call.received_at,
    )


# The batch's hooks ($1 ids, $2 calls to each), then for the active ones their calls
# counted against their limits (the org's own, else $3 a minute), then the calls within
# those limits counted against their orgs' (the org's own, else $4). Hooks and orgs are
# distinct rows of their CTEs, as ON CONFLICT requires.
_ADMIT = (
    "WITH q AS (SELECT * FROM unnest($1::text[], $2::int4[]) AS q(id, n)),"
    " h AS (SELECT w.id, w.org, w.repo, w.name, w.target, w.event, w.verify, w.active,"
    " w.secret_enc, q.n, coalesce(l.inbound_rate_per_hook, $3) AS per_hook,"
    " coalesce(l.inbound_rate_per_org, $4) AS per_org"
    " FROM inbound_webhooks w JOIN q ON w.id = q.id LEFT JOIN org_limits l ON l.org = w.org"
    " WHERE w.deleted_at IS NULL), "
    + counted("k0", _HOOK_KEY, "FROM h WHERE h.active", n="h.n")
    + ", allowed AS (SELECT h.org, greatest(0, least(h.n, h.per_hook - (k0.count - h.n))) AS a"
    f" FROM h JOIN k0 ON k0.key = {_HOOK_KEY}), "
    + counted(
        "k1",
        "'inbound:org:' || a.org",
        "FROM (SELECT org, sum(a)::int4 AS n FROM allowed GROUP BY org) a WHERE a.n > 0",
        n="a.n",
    )
    + " SELECT h.id, h.org, h.repo, h.name, h.target, h.event, h.verify, h.active,"
    " h.secret_enc, h.n, h.per_hook, h.per_org, k0.count AS hook_count, k0.wait AS hook_wait,"
    " k1.count AS org_count, k1.wait AS org_wait"
    f" FROM h LEFT JOIN k0 ON k0.key = {_HOOK_KEY} LEFT JOIN k1 ON k1.key = {_ORG_KEY}"
)


def _refusal(key: str, limit: int, wait: float) -> Refusal:
    return Refusal(key=key, limit=limit, retry_after=max(1, math.ceil(wait)))


class CallGate:
    """Admits calls: the hook each names (None if unknown or deleted) and, for an active
    one, whether it is within the hook's limit and then the org's (`Refusal` if not)."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox, *, per_hook: int, per_org: int) -> None:
        self._pool = pool
        self._secrets = OpenedSecrets(box)
        self.per_hook = per_hook  # defaults; an org's own limits (org_limits) win
        self.per_org = per_org
        self._batcher: SessionBatcher[
            asyncpg.Connection, str, tuple[CallTarget | None, Refusal | None]
        ] = SessionBatcher(pool.acquire, self._admit_many, in_flight=GATE_IN_FLIGHT)

    async def admit(self, hook_id: str) -> tuple[CallTarget | None, Refusal | None]:
        if not is_inbound_id(hook_id):
            return None, None
        return await self._batcher.submit(hook_id)

    async def _admit_many(
        self, conn: asyncpg.Connection, ids: Sequence[str]
    ) -> list[tuple[CallTarget | None, Refusal | None]]:
        calls = Counter(ids)
        rows = await conn.fetch(
            _ADMIT, list(calls), list(calls.values()), self.per_hook, self.per_org
        )
        hooks: dict[str, tuple[CallTarget, asyncpg.Record]] = {}
        org_allowed: Counter[str] = Counter()
        for row in rows:
            hooks[row["id"]] = (call_target(row, self._secrets), row)
            if row["hook_count"] is not None:
                prev = row["hook_count"] - row["n"]
                org_allowed[row["org"]] += max(0, min(row["n"], row["per_hook"] - prev))
        hook_seen: Counter[str] = Counter()
        org_seen: Counter[str] = Counter()
        out: list[tuple[CallTarget | None, Refusal | None]] = []
        for hook_id in ids:  # in arrival order: the first calls of a window get in
            found = hooks.get(hook_id)
            if found is None:
                out.append((None, None))
                continue
            hook, row = found
            if row["hook_count"] is None:  # disabled: not counted
                out.append((hook, None))
                continue
            hook_seen[hook_id] += 1
            refusal = None
            if row["hook_count"] - row["n"] + hook_seen[hook_id] > row["per_hook"]:
                refusal = _refusal(f"inbound:hook:{hook_id}", row["per_hook"], row["hook_wait"])
            else:
                org_seen[hook.org] += 1
                org_count = row["org_count"] - org_allowed[hook.org] + org_seen[hook.org]
                if org_count > row["per_org"]:
                    refusal = _refusal(f"inbound:org:{hook.org}", row["per_org"], row["org_wait"])
            out.append((hook, refusal))
        return out


_INVOCATION = (
    "INSERT INTO inbound_invocations (id, inbound_webhook_id, org, received_at, source_ip,"
    " headers, body, result, status, event_id, error, test)"
)
# A batch of invocations, and the outbox rows of the accepted ones: one statement, its rows
# one JSON document ($1), which costs the edge less than one array per column (each element
# encoded by the driver): measured, about half the client CPU per row. An event is the
# text of orjson's bytes of its message, as `shared.ingest` writes it (and why).
_RECORD_ROW = (
    "id uuid, hook text, org text, received_at timestamptz, source_ip text, headers jsonb,"
    " body text, result text, status int4, event_id text, error text, test bool,"
    " event_key text, event text"
)
_RECORD = (
    f"WITH b AS (SELECT * FROM json_to_recordset($1::json) AS b({_RECORD_ROW})),"
    f" inv AS ({_INVOCATION} SELECT id, hook, org, received_at, source_ip, headers, body,"
    " result, status, event_id, error, test FROM b)"
    " INSERT INTO outbox (topic, key, value)"
    " SELECT $2, convert_to(b.event_key, 'UTF8'), convert_to(b.event, 'UTF8') FROM b"
    " WHERE b.event IS NOT NULL"
)
# With an idempotency key the key claims the event first; when it is already held (within
# 24 h) the statement writes nothing and the caller logs a duplicate.
_ACCEPT_ONCE = (
    "WITH idem AS (INSERT INTO inbound_idempotency AS k"
    " (inbound_webhook_id, key, event_id, created_at) VALUES ($2, $13, $8, $4)"
    " ON CONFLICT (inbound_webhook_id, key) DO UPDATE"
    " SET event_id = EXCLUDED.event_id, created_at = EXCLUDED.created_at"
    f" WHERE k.created_at < EXCLUDED.created_at - interval '{IDEMPOTENCY_HOURS} hours'"
    " RETURNING event_id),"
    f" inv AS ({_INVOCATION}"
    " SELECT $1, $2, $3, $4, $5, $6, $7, 'accepted', 202, $8, NULL, $9 FROM idem),"
    " ob AS (INSERT INTO outbox (topic, key, value) SELECT $10, $11, $12 FROM idem)"
    " SELECT count(*) FROM idem"
)
_DUPLICATE = (
    "WITH seen AS (SELECT event_id FROM inbound_idempotency"
    " WHERE inbound_webhook_id = $2 AND key = $9)"
    f" {_INVOCATION}"
    " SELECT $1, $2, $3, $4, $5, $6, $7, 'duplicate', 200, seen.event_id, NULL, $8 FROM seen"
    " RETURNING event_id"
)


@dataclass(frozen=True)
class _Record:
    hook: CallTarget
    call: Call
    result: str
    status: int
    event: EventMessage | None = None
    error: str | None = None


def _record_row(r: _Record) -> dict[str, Any]:
    """One row of `_RECORD`'s document (orjson writes the UUID and the datetime)."""
    event = r.event
    return {
        "id": r.call.id,
        "hook": r.hook.id,
        "org": r.hook.org,
        "received_at": r.call.received_at,
        "source_ip": r.call.source_ip,
        "headers": r.call.headers,
        "body": r.call.body,
        "result": r.result,
        "status": r.status,
        "event_id": event.id if event is not None else None,
        "error": r.error,
        "test": r.call.test,
        "event_key": event.key.decode() if event is not None else None,
        "event": orjson.dumps(event.to_dict()).decode() if event is not None else None,
    }


class InvocationLog:
    """Appends invocations; an accepted one together with its event, atomically (and then
    wakes the relays)."""

    def __init__(self, pool: asyncpg.Pool, waker: OutboxWaker | None = None) -> None:
        self._pool = pool
        self._waker = waker
        # A value the database refuses fails only the call that holds it.
        self._batcher: SessionBatcher[asyncpg.Connection, _Record, None] = SessionBatcher(
            pool.acquire, self._record_many, in_flight=LOG_IN_FLIGHT, split_on=(Unstorable,)
        )

    @translated
    async def _record_many(
        self, conn: asyncpg.Connection, records: Sequence[_Record]
    ) -> list[None]:
        rows = [_record_row(r) for r in records]
        await conn.execute(_RECORD, rows, EVENTS)
        if self._waker is not None and any(r.event is not None for r in records):
            self._waker.poke()
        return [None] * len(records)

    async def accept(
        self, hook: CallTarget, call: Call, event: EventMessage, key: str | None
    ) -> tuple[str, bool]:
        """Records the call and enqueues its event; returns (event id, duplicate)."""
        if key is None:
            await self._batcher.submit(_Record(hook, call, "accepted", 202, event))
            return event.id, False
        args = [
            *self._row(hook, call),
            event.id,
            call.test,
            EVENTS,
            event.key,
            orjson.dumps(event.to_dict()),
        ]
        async with self._pool.acquire() as conn:
            if await conn.fetchval(_ACCEPT_ONCE, *args, key):
                if self._waker is not None:
                    self._waker.poke()
                return event.id, False
            seen = await conn.fetchval(_DUPLICATE, *self._row(hook, call), call.test, key)
        if seen is None:  # the key's row was pruned between the two statements: try again
            return await self.accept(hook, call, event, key)
        return seen, True

    def _row(self, hook: CallTarget, call: Call) -> list[Any]:
        return [
            uuid.UUID(call.id),
            hook.id,
            hook.org,
            call.received_at,
            call.source_ip,
            call.headers,
            call.body,
        ]

    async def refuse(
        self, hook: CallTarget, call: Call, *, result: str, status: int, error: str
    ) -> None:
        """Records a refused call (no event)."""
        await self._batcher.submit(_Record(hook, call, result, status, error=error))

    async def close(self) -> None:
        await self._batcher.close()
