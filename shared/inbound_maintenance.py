"""Housekeeping of the inbound tables: daily invocation partitions made ahead and dropped
after the retention, idempotency keys forgotten after 24 h, closed rate windows pruned."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from shared.log.partitions import (
    drop_daily_partitions,
    exclusive,
    longest_retention,
    trim_per_org,
)
from shared.ratelimit import SharedRateLimiter

log = structlog.get_logger(__name__)
_LOCK = 0x686F6F6C  # one replica at a time makes or drops partitions
_KEY_BATCH = 10_000


async def maintain(
    pool: asyncpg.Pool, retention_days: int, *, now: datetime | None = None
) -> list[str]:
    """Makes the coming days' partitions, drops those past the retention and forgets old
    idempotency keys (in bounded batches, each committed on its own); returns the dropped
    partitions' names. One replica at a time."""
    moment = now or datetime.now(UTC)
    dropped: list[str] = []
    async with exclusive(pool, _LOCK) as conn:
        if conn is None:
            return dropped
        longest = await longest_retention(conn, retention_days)
        cutoff = moment.date() - timedelta(days=longest)
        await conn.execute("SELECT hookline_ensure_daily_partitions('inbound_invocations', 1, 7)")
        dropped = await drop_daily_partitions(conn, "inbound_invocations", cutoff)
        await trim_per_org(
            conn,
            "inbound_invocations",
            "received_at",
            retention_days,
            longest,
            today=moment.date(),
        )
        while True:
            done = await conn.execute(
                "DELETE FROM inbound_idempotency WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
                " inbound_idempotency WHERE created_at < $1 LIMIT $2))",
                moment - timedelta(hours=24),
                _KEY_BATCH,
            )
            if int(done.split()[-1]) < _KEY_BATCH:
                break
    if dropped:
        log.info("inbound invocation partitions dropped", partitions=dropped)
    return dropped


async def maintain_forever(
    pool: asyncpg.Pool, limiter: SharedRateLimiter, retention_days: int, stop: asyncio.Event
) -> None:
    """Prunes rate windows every minute and runs `maintain` hourly, until `stop`."""
    minutes = 0
    while not stop.is_set():
        try:
            if minutes % 60 == 0:
                await maintain(pool, retention_days)
            await limiter.prune()
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("inbound maintenance failed", error=str(exc))
        minutes += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await stop.wait()
