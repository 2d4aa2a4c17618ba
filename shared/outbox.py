"""The transactional outbox: write a Kafka message in your own PostgreSQL transaction.

The relay publishes each row to its topic and marks it published after the broker's ack.
The plain-SQL equivalent of `enqueue_event`:

    INSERT INTO outbox (topic, key, value)
    VALUES ('hookline.events', convert_to('acme/widgets', 'UTF8'),
            convert_to('{"id":"evt-1","event":"push","org":"acme","repo":"widgets",
                         "payload":{"ref":"refs/heads/main"}}', 'UTF8'));
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from shared.core.messages import EventMessage, make_event
from shared.kafka import EVENTS

CHANNEL = "hookline_outbox"
log = structlog.get_logger(__name__)


async def enqueue(
    conn: asyncpg.Connection,
    *,
    topic: str,
    key: bytes | str | None,
    value: bytes | None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Adds one message to the outbox; returns its row id. Call inside your transaction."""
    if isinstance(key, str):
        key = key.encode()
    row_id: int = await conn.fetchval(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4) RETURNING id",
        topic,
        key,
        value,
        dict(headers or {}),
    )
    return row_id


async def enqueue_many(
    conn: asyncpg.Connection, rows: list[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Adds (topic, key, value) rows in one statement."""
    if rows:
        await conn.executemany("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)", rows)


async def enqueue_event(
    conn: asyncpg.Connection,
    *,
    org: str,
    repo: str,
    event: str,
    payload: dict[str, Any],
    action: str | None = None,
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> EventMessage:
    """Validates an event and writes it to the outbox for `hookline.events`.

    Raises `shared.core.errors.ValidationError` naming the bad field.
    """
    msg = make_event(
        org=org,
        repo=repo,
        event=event,
        action=action,
        payload=payload,
        event_id=event_id,
        created_at=created_at,
    )
    await enqueue(conn, topic=EVENTS, key=msg.key, value=orjson.dumps(msg.to_dict()))
    return msg


class OutboxWaker:
    """Wakes the relays (`NOTIFY hookline_outbox`) after commits that added outbox rows.

    Call `poke()` after your transaction committed. Pokes are coalesced: one NOTIFY per
    `every` seconds at most, each in a statement of its own, so no producing transaction
    carries a NOTIFY (which would serialise their commits). A lost poke costs a relay poll
    interval, nothing more."""

    def __init__(self, pool: asyncpg.Pool, *, every: float = 0.005) -> None:
        self._pool = pool
        self._every = every
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        if self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self._every, self._send_soon)

    def _send_soon(self) -> None:
        self._task = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        self._pending = False
        try:
            await self._pool.execute("SELECT pg_notify($1, '')", CHANNEL)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("relay wake-up not sent", error=type(exc).__name__)
