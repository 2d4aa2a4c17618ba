"""The transactional outbox: write a Kafka message in your own PostgreSQL transaction.

The relay publishes each row to its topic and marks it published after the broker's ack.
The plain-SQL equivalent of `enqueue_event`:

    INSERT INTO outbox (topic, key, value)
    VALUES ('hookline.events', convert_to('acme/widgets', 'UTF8'),
            convert_to('{"id":"evt-1","event":"push","org":"acme","repo":"widgets",
                         "payload":{"ref":"refs/heads/main"}}', 'UTF8'));
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from shared.core.messages import EventMessage, make_event
from shared.kafka import EVENTS


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
