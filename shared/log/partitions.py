"""Retention of the delivery log: daily partitions are created ahead and dropped once
older than the retention, with the summary rows of the deliveries they held."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from shared.core.errors import is_retryable
from shared.db import translated

log = structlog.get_logger(component="delivery_log")

_PARTITION = re.compile(r"^delivery_attempts_(\d{8})$")
# Any fixed number: one replica at a time creates or drops partitions.
_MAINTENANCE_LOCK = 0x686C6F67


@translated
async def maintain(
    pool: asyncpg.Pool, retention_days: int, *, now: datetime | None = None
) -> list[str]:
    """Creates the coming days' partitions and drops those older than the retention;
    returns the dropped partitions' names. One replica at a time does it."""
    today = (now or datetime.now(UTC)).date()
    cutoff = today - timedelta(days=retention_days)
    dropped: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _MAINTENANCE_LOCK):
            return dropped
        await conn.execute("SELECT hookline_ensure_partitions(1, 7)")
        names = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'delivery_attempts'::regclass"
        )
        for rec in names:
            match = _PARTITION.match(rec["relname"])
            if match is None:
                continue
            day = datetime.strptime(match.group(1), "%Y%m%d").date()
            if day < cutoff:
                await conn.execute(f'DROP TABLE "{rec["relname"]}"')
                dropped.append(rec["relname"])
        # The summary rows of deliveries whose attempts are gone go with them.
        await conn.execute(
            "DELETE FROM deliveries WHERE last_at < $1",
            datetime.combine(cutoff, datetime.min.time(), UTC),
        )
    if dropped:
        log.info("delivery log partitions dropped", partitions=dropped)
    return dropped


async def maintain_forever(pool: asyncpg.Pool, retention_days: int, stop: asyncio.Event) -> None:
    """`maintain` now and then hourly until `stop` is set; failures are logged."""
    while not stop.is_set():
        try:
            await maintain(pool, retention_days)
        except Exception as exc:  # never stops the loop: the next hour tries again
            log.warning(
                "delivery log maintenance failed", error=repr(exc), outage=is_retryable(exc)
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3600):
                await stop.wait()
