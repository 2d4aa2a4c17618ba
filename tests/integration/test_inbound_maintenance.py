"""Inbound housekeeping: invocation partitions made ahead and dropped after the retention,
idempotency keys forgotten after 24 h, closed rate windows pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.inbound_maintenance import maintain
from shared.ratelimit import SharedRateLimiter

# Its own database: maintenance goes by the longest retention in force over every org.
pytestmark = pytest.mark.own_database


async def test_partitions_ahead_and_retention(pool: asyncpg.Pool) -> None:
    old_day = (datetime.now(UTC) - timedelta(days=40)).date()
    name = f"inbound_invocations_{old_day:%Y%m%d}"
    await pool.execute(
        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF inbound_invocations'
        f" FOR VALUES FROM ('{old_day}') TO ('{old_day + timedelta(days=1)}')"
    )
    dropped = await maintain(pool, retention_days=30)
    assert name in dropped
    assert await pool.fetchval("SELECT to_regclass($1)", name) is None
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert await pool.fetchval("SELECT to_regclass($1)", f"inbound_invocations_{tomorrow:%Y%m%d}")


async def test_idempotency_keys_older_than_a_day_are_forgotten(
    pool: asyncpg.Pool, org: str
) -> None:
    now = datetime.now(UTC)
    await pool.executemany(
        "INSERT INTO inbound_idempotency (inbound_webhook_id, key, event_id, created_at)"
        " VALUES ($1, $2, 'e', $3)",
        [(f"ih_{org}", "old", now - timedelta(hours=25)), (f"ih_{org}", "new", now)],
    )
    await maintain(pool, retention_days=30)
    kept = await pool.fetch(
        "SELECT key FROM inbound_idempotency WHERE inbound_webhook_id = $1", f"ih_{org}"
    )
    assert [r["key"] for r in kept] == ["new"]


async def test_closed_rate_windows_are_pruned(pool: asyncpg.Pool, org: str) -> None:
    limiter = SharedRateLimiter(pool)
    assert await limiter.take(f"test:{org}:open", 1) is None
    await pool.execute(
        "INSERT INTO rate_limits (key, window_start, count)"
        " VALUES ($1, now() - interval '5 min', 3)",
        f"test:{org}:closed",
    )
    await limiter.prune()
    keys = await pool.fetch("SELECT key FROM rate_limits WHERE key LIKE $1", f"test:{org}:%")
    assert [r["key"] for r in keys] == [f"test:{org}:open"]
    refused = await limiter.take(f"test:{org}:open", 1)
    assert refused is not None and refused.limit == 1 and 1 <= refused.retry_after <= 60
