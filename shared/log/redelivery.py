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

from shared.core.attempts import AttemptRow
from shared.core.errors import Conflict, NotFound
from shared.core.messages import DeliveryMessage
from shared.db import translated
from shared.kafka import DELIVERIES
from shared.outbox import enqueue_many

from .numbering import Resend, reserve_resends
from .queries import NO_BOUND, SUMMARY_SLACK, parse_id

GET_FIRST_AT = "SELECT first_at FROM deliveries WHERE id = $1"

RECOVER_MAX = 10_000  # deliveries redelivered by one recover call, newest first
RECOVER_PAGE = 10  # deliveries whose bodies are held in memory at once
RECOVER_IDS = (
    "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = ANY($2::text[])"
    " AND first_at >= $3 ORDER BY first_at DESC, id DESC LIMIT $4"
)
# What names each delivery and the range of its attempts: no bodies.
RESEND_META = (
    "SELECT delivery_id, webhook_id, org, event_id, event_type, max(attempt) AS logged,"
    " min(started_at) AS first_at, max(started_at) AS last_at FROM delivery_attempts"
    " WHERE delivery_id = ANY($1::uuid[]) AND started_at >= $2"
    " GROUP BY delivery_id, webhook_id, org, event_id, event_type"
)
# The one body each delivery is sent again with: its newest attempt's that logged one.
RESEND_BODIES = (
    "SELECT DISTINCT ON (delivery_id) delivery_id, request_body FROM delivery_attempts"
    " WHERE delivery_id = ANY($1::uuid[]) AND started_at >= $2 AND request_body <> ''"
    " ORDER BY delivery_id, attempt DESC, started_at DESC"
)
RECOVER_ATTEMPTS = RESEND_META  # (the name tests/bench/explain_log.py plans)


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


def _resends(rows: Sequence[asyncpg.Record]) -> list[Resend]:
    return [
        Resend(
            delivery=AttemptRow(
                delivery_id=str(r["delivery_id"]),
                webhook_id=str(r["webhook_id"]),
                org=r["org"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                attempt=r["logged"],
                trigger="manual",
                outcome="pending",
                started_at=r["last_at"],
            ),
            logged=r["logged"],
            first_at=r["first_at"],
            last_at=r["last_at"],
        )
        for r in rows
    ]


async def _bodies(
    conn: asyncpg.Connection, ids: Sequence[uuid.UUID], since: datetime
) -> dict[str, dict[str, Any]]:
    """Each delivery's payload to send again; one without a usable body is left out."""
    payloads = {}
    for row in await conn.fetch(RESEND_BODIES, ids, since):
        try:
            payloads[str(row["delivery_id"])] = request_payload(row["request_body"])
        except Conflict:
            continue
    return payloads


class Redelivery:
    """Tenant-scoped redelivery; `org=None` is the admin's view. Only the one body each
    delivery is sent again with is read, never every attempt's."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translated
    async def redeliver(self, delivery_id: str, org: str | None) -> DeliveryMessage:
        """Sends a delivery again: same id, the next attempt number, trigger `manual`."""
        did = parse_id(delivery_id, "delivery")
        async with self._pool.acquire() as conn, conn.transaction():
            first_at = await conn.fetchval(GET_FIRST_AT, did)
            since = NO_BOUND if first_at is None else first_at - SUMMARY_SLACK
            resends = _resends(await conn.fetch(RESEND_META, [did], since))
            if not resends or (org is not None and resends[0].delivery.org != org):
                raise NotFound("delivery not found")
            exists = await conn.fetchval(
                "SELECT 1 FROM webhooks WHERE id = $1", uuid.UUID(resends[0].delivery.webhook_id)
            )
            if not exists:
                raise Conflict("the webhook of this delivery has been deleted")
            payloads = await _bodies(conn, [did], since)
            if not payloads:
                request_payload(None)  # Conflict: nothing to send again
            (msg,) = await _resend(conn, resends, payloads, "manual")
        return msg

    @translated
    async def recover(
        self, webhook_id: str, since: datetime, *, statuses: Sequence[str] = ("failed", "dead")
    ) -> int:
        """Redelivers (trigger `recover`) every failed or dead delivery of a webhook first
        attempted at or after `since`, newest first, at most RECOVER_MAX per call; the
        bodies are read RECOVER_PAGE deliveries at a time. Re-enabling passes `skipped`
        too (what was not sent while the webhook was off)."""
        wid = parse_id(webhook_id, "webhook")
        # Attempts start at or after their delivery's first_at: older partitions pruned.
        bound = since - SUMMARY_SLACK
        count = 0
        async with self._pool.acquire() as conn, conn.transaction():
            ids = [
                r["id"]
                for r in await conn.fetch(RECOVER_IDS, wid, list(statuses), since, RECOVER_MAX)
            ]
            for start in range(0, len(ids), RECOVER_PAGE):
                page = ids[start : start + RECOVER_PAGE]
                # A delivery whose log rows are gone (retention) or hold no body is skipped.
                payloads = await _bodies(conn, page, bound)
                resends = [
                    r
                    for r in _resends(await conn.fetch(RESEND_META, page, bound))
                    if r.delivery.delivery_id in payloads
                ]
                if resends:
                    count += len(await _resend(conn, resends, payloads, "recover"))
        return count


async def _resend(
    conn: asyncpg.Connection,
    resends: list[Resend],
    payloads: dict[str, dict[str, Any]],
    trigger: str,
) -> list[DeliveryMessage]:
    """Writes one single-shot message per delivery with its reserved attempt number, in
    the caller's transaction: two redeliveries of one delivery, or one racing its
    automatic retry, never share a number."""
    now = time.time()
    number = await reserve_resends(conn, resends)
    messages = []
    for resend in resends:
        last = resend.delivery
        messages.append(
            DeliveryMessage(
                delivery_id=last.delivery_id,
                webhook_id=last.webhook_id,
                org=last.org,
                event_id=last.event_id,
                event_type=last.event_type,
                body=payloads[last.delivery_id],
                attempt=number[last.delivery_id],
                trigger=trigger,
                enqueued_at=now,
                single=True,
                numbered=True,
            )
        )
    await enqueue_many(conn, [(DELIVERIES, m.key, m.encode()) for m in messages])
    return messages
