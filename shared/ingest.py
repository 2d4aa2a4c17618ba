"""Writing ingested events: each event's id claimed in `events` (idempotency) and the new
ones put in the outbox, in one statement; the batch route writes its events at once,
and the single route's concurrent requests share transactions through `EventWriter`.

A request is answered only once its transaction committed (synchronous commit), so the
202 still means durable; sharing the transaction shares its round trips and its WAL flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import orjson

from shared.batching import SessionBatcher
from shared.core.errors import Unstorable
from shared.core.messages import EventMessage
from shared.db import db_errors
from shared.kafka import EVENTS

# One statement, so one round trip and one implicit transaction (no BEGIN and COMMIT of
# their own): claims each event's id in `events` (a repeated id inserts nothing: the
# caller answers 200 or 409) and writes the new ones to the outbox, in the order given.
# The events come as one JSON document ($1), each with its message as a string of the
# bytes orjson made of it (an array per column cost the driver an encoding per element,
# and an isinstance check on each). Not as a nested object: PostgreSQL unescapes every
# string of the document while reading it, and a message may hold a NUL (`\u0000`), which
# no text value can.
_WRITE = (
    "WITH v AS (SELECT * FROM ROWS FROM (json_to_recordset($1::json) AS (id text, org text,"
    " repo text, type text, created_at timestamptz, k text, value text)) WITH ORDINALITY"
    " AS v(id, org, repo, type, created_at, k, value, n)),"
    " claimed AS (INSERT INTO events (id, org, repo, type, created_at)"
    " SELECT id, org, repo, type, created_at FROM v"
    " ON CONFLICT (org, id) DO NOTHING RETURNING org, id),"
    " queued AS (INSERT INTO outbox (topic, key, value)"
    " SELECT $2, convert_to(v.k, 'UTF8'), convert_to(v.value, 'UTF8')"
    " FROM v JOIN claimed c ON c.org = v.org AND c.id = v.id ORDER BY v.n)"
    " SELECT org, id FROM claimed"
)
# Which repo holds each id that was not new.
_SEEN = (
    "SELECT e.org, e.id, e.repo FROM events e"
    " JOIN unnest($1::text[], $2::text[]) AS q(org, id) ON e.org = q.org AND e.id = q.id"
)

Key = tuple[str, str]  # (org, event id)


async def write_events(
    conn: asyncpg.Connection, events: Sequence[EventMessage], received: Sequence[datetime]
) -> tuple[set[Key], dict[Key, str]]:
    """Claims the ids of `events` (distinct keys; each received at its `received` time)
    and writes the new ones to the outbox, committed as one statement; returns the keys
    claimed, and for the others the repo whose event holds the id."""
    document = [
        {
            "id": e.id,
            "org": e.org,
            "repo": e.repo,
            "type": e.type,
            "created_at": at,
            "k": e.key.decode(),
            "value": orjson.dumps(e.to_dict()).decode(),
        }
        for e, at in zip(events, received, strict=True)
    ]
    rows = await conn.fetch(_WRITE, document, EVENTS)
    claimed = {(r["org"], r["id"]) for r in rows}
    old = [e for e in events if (e.org, e.id) not in claimed]
    seen: dict[Key, str] = {}
    if old:  # committed: a claim that raced ours waited for the other to commit
        rows = await conn.fetch(_SEEN, [e.org for e in old], [e.id for e in old])
        seen = {(r["org"], r["id"]): r["repo"] for r in rows}
    return claimed, seen


class EventWriter:
    """Writes single events for concurrent requests, many to a transaction."""

    def __init__(self, pool: asyncpg.Pool, *, in_flight: int = 4) -> None:
        self._pool = pool
        # A value the database refuses fails only the request that holds it.
        self._batcher: SessionBatcher[
            asyncpg.Connection, tuple[EventMessage, datetime], str | None
        ] = SessionBatcher(
            pool.acquire, self._write, max_batch=256, in_flight=in_flight, split_on=(Unstorable,)
        )

    async def write(self, event: EventMessage, now: datetime) -> str | None:
        """Writes `event` (created at `now`) once committed; None if it was new, else the
        repo of the event that already holds its id (a repeat: nothing was written).
        Raises Unstorable if the database refuses one of its values."""
        return await self._batcher.submit((event, now))

    async def _write(
        self, conn: asyncpg.Connection, items: Sequence[tuple[EventMessage, datetime]]
    ) -> list[str | None]:
        first: dict[Key, tuple[EventMessage, datetime]] = {}
        for event, now in items:
            first.setdefault((event.org, event.id), (event, now))
        events, received = zip(*first.values(), strict=True)
        with db_errors():
            claimed, seen = await write_events(conn, events, received)
        out: list[str | None] = []
        for event, _ in items:
            key = (event.org, event.id)
            holder = first[key][0]
            if key in claimed and holder is event:
                out.append(None)
            else:  # held before, or by an earlier request of this same transaction
                out.append(seen.get(key, holder.repo))
        return out
