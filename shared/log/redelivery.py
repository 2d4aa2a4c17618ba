"""Redelivery: send a logged delivery again, or every failed one of a webhook since a
moment. Neither touches the log: each writes a single-shot `DeliveryMessage` through the
outbox for the senders, with its attempt number reserved (`numbering`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson

from shared.core.errors import Conflict
from shared.core.messages import DeliveryMessage
from shared.db import translated
from shared.kafka import DELIVERIES
from shared.outbox import enqueue_many

from .numbering import reserve_resends
from .queries import (
    ATTEMPT_COLUMNS,
    SUMMARY_SLACK,
    LoggedAttempt,
    load_attempts,
    parse_id,
    to_attempt,
)

RECOVER_MAX = 10_000  # deliveries redelivered by one recover call, newest first
RECOVER_IDS = (
    "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = ANY($2::text[])"
    " AND first_at >= $3 ORDER BY first_at DESC, id DESC LIMIT $4"
)
RECOVER_ATTEMPTS = (
    f"SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id = ANY($1::uuid[])"
    " AND started_at >= $2"
)  # unordered: sorting thousands of wide rows spilled to disk; recover orders them itself


def request_payload(body: str | None) -> dict[str, Any]:
    """The JSON object a logged request carried: a JSON body, or `payload=<url-encoded
    JSON>` for form webhooks. Conflict if the log holds no usable body."""
    if body:
        text = body
        if not body.lstrip().startswith("{"):
            values = parse_qs(body, keep_blank_values=True).get("payload")
            text = values[0] if values else ""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
    raise Conflict("the delivery log holds no request body to send again")


def payload_of(attempts: Sequence[LoggedAttempt]) -> dict[str, Any]:
    """The body to send again: from the newest attempt that logged one (a skipped or
    undecryptable attempt may have logged none)."""
    for attempt in reversed(attempts):
        if attempt.request_body:
            return request_payload(attempt.request_body)
    return request_payload(None)


class Redelivery:
    """Tenant-scoped redelivery; `org=None` is the admin's view."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translated
    async def redeliver(self, delivery_id: str, org: str | None) -> DeliveryMessage:
        """Sends a delivery again: same id, the next attempt number, trigger `manual`."""
        async with self._pool.acquire() as conn, conn.transaction():
            attempts, _ = await load_attempts(conn, delivery_id, org)
            exists = await conn.fetchval(
                "SELECT 1 FROM webhooks WHERE id = $1", uuid.UUID(attempts[-1].webhook_id)
            )
            if not exists:
                raise Conflict("the webhook of this delivery has been deleted")
            (msg,) = await _resend(conn, [attempts], "manual")
        return msg

    @translated
    async def recover(self, webhook_id: str, since: datetime) -> int:
        """Redelivers (trigger `recover`) every failed or dead delivery of a webhook first
        attempted at or after `since`, newest first, at most RECOVER_MAX per call."""
        wid = parse_id(webhook_id, "webhook")
        async with self._pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(RECOVER_IDS, wid, ["failed", "dead"], since, RECOVER_MAX)
            if not ids:
                return 0
            # Attempts start at or after their delivery's first_at: older partitions pruned.
            rows = await conn.fetch(RECOVER_ATTEMPTS, [r["id"] for r in ids], since - SUMMARY_SLACK)
            grouped: dict[str, list[LoggedAttempt]] = {}
            for r in rows:
                attempt = to_attempt(r)
                grouped.setdefault(attempt.delivery_id, []).append(attempt)
            # A delivery whose log rows are gone (retention) or hold no body is skipped.
            usable = []
            for found in ids:
                attempts = sorted(
                    grouped.get(str(found["id"]), ()), key=lambda a: (a.attempt, a.started_at)
                )
                if not attempts:
                    continue
                try:
                    payload_of(attempts)
                except Conflict:
                    continue
                usable.append(attempts)
            if usable:
                await _resend(conn, usable, "recover")
        return len(usable)


async def _resend(
    conn: asyncpg.Connection, deliveries: list[list[LoggedAttempt]], trigger: str
) -> list[DeliveryMessage]:
    """Writes one single-shot message per delivery (attempts as logged, oldest first)
    with its reserved attempt number, in the caller's transaction: two redeliveries of
    one delivery, or one racing its automatic retry, never share a number."""
    now = time.time()
    number = await reserve_resends(conn, deliveries)
    messages = []
    for attempts in deliveries:
        last = attempts[-1]
        messages.append(
            DeliveryMessage(
                delivery_id=last.delivery_id,
                webhook_id=last.webhook_id,
                org=last.org,
                event_id=last.event_id,
                event_type=last.event_type,
                body=payload_of(attempts),
                attempt=number[last.delivery_id],
                trigger=trigger,
                enqueued_at=now,
                single=True,
                numbered=True,
            )
        )
    await enqueue_many(conn, [(DELIVERIES, m.key, m.encode()) for m in messages])
    return messages
