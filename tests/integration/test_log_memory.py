"""Reading the delivery log holds what one call needs, not every attempt's body: a recover
over many large deliveries and a read of one with many large attempts stay small."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared.log.queries import DeliveryQueries
from shared.log.redelivery import RECOVER_PAGE, Redelivery

BODY_CHARS = 200_000  # each attempt's request and response body


async def _large_delivery(
    pool: asyncpg.Pool, webhook_id: uuid.UUID, org: str, at: datetime, attempts: int
) -> str:
    delivery_id = uuid.uuid4()
    body = orjson.dumps({"event": "push", "pad": "x" * BODY_CHARS}).decode()
    await pool.executemany(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at, request_body, response_body, error)"
        " VALUES ($1, $2, $3, 'e', 'push', $4, 'auto', 'failed', $5, $6, $7, 'http_status')",
        [
            (delivery_id, webhook_id, org, n, at + timedelta(seconds=n), body, "r" * BODY_CHARS)
            for n in range(1, attempts + 1)
        ],
    )
    await pool.execute(
        "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
        " first_at, last_at) VALUES ($1, $2, $3, 'e', 'push', 'dead', $4, $5, $5)",
        delivery_id,
        webhook_id,
        org,
        attempts,
        at,
    )
    return str(delivery_id)


async def _peak_mib(call: Awaitable[Any]) -> tuple[Any, float]:
    tracemalloc.start()
    try:
        result = await call
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / 2**20


async def test_recover_reads_one_body_per_delivery_a_page_at_a_time(
    pool: asyncpg.Pool, org: str
) -> None:
    webhook_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO webhooks (id, org, repo, url, events, secret_enc)"
        " VALUES ($1, $2, 'r', 'http://127.0.0.1:9/', '{push}', '\\x00')",
        webhook_id,
        org,
    )
    at = datetime.now(UTC) - timedelta(minutes=5)
    deliveries = 6 * RECOVER_PAGE
    for _ in range(deliveries):
        await _large_delivery(pool, webhook_id, org, at, attempts=3)
    # Every attempt's bodies together: 60 deliveries x 3 attempts x 2 x 200 KB = 72 MB.
    count, peak = await _peak_mib(Redelivery(pool).recover(str(webhook_id), at - timedelta(1)))
    assert count == deliveries
    assert peak < 40, f"recover held {peak:.0f} MiB"  # over 200 MiB before it paged
    sent = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = 'hookline.deliveries' AND key = $1",
        str(webhook_id).encode(),
    )
    assert len(sent) == deliveries
    assert all(len(orjson.loads(r["value"])["body"]["pad"]) == BODY_CHARS for r in sent)


async def test_reading_a_delivery_reads_its_bodies_cut(pool: asyncpg.Pool, org: str) -> None:
    at = datetime.now(UTC) - timedelta(minutes=5)
    delivery_id = await _large_delivery(pool, uuid.uuid4(), org, at, attempts=20)
    # 20 attempts x 2 bodies x 200 KB = 8 MB in the log; shown: 16 KiB of each.
    found, peak = await _peak_mib(DeliveryQueries(pool).get(delivery_id, org))
    assert len(found.attempts) == 20
    assert all(len(a.request_body or "") <= 16 * 1024 + 1 for a in found.attempts)
    assert peak < 4, f"get held {peak:.1f} MiB"
