"""Retention of the delivery log: daily partitions are created ahead and dropped once
older than the longest retention in force, with the summary rows of the deliveries they
held; an org with a shorter retention (org_limits) has its older rows deleted in batches."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog

from shared.core.errors import is_retryable
from shared.db import translated

log = structlog.get_logger(component="delivery_log")

# Any fixed number: one replica at a time creates or drops partitions.
_MAINTENANCE_LOCK = 0x686C6F67


TRIM_BATCH = 10_000  # rows deleted per statement when an org's retention is shorter


async def drop_daily_partitions(conn: asyncpg.Connection, parent: str, cutoff: date) -> list[str]:
    """Drops the daily partitions `<parent>_YYYYMMDD` of days before `cutoff`; their names."""
    pattern = re.compile(rf"^{parent}_(\d{{8}})$")
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        parent,
    )
    dropped = []
    for rec in names:
        match = pattern.match(rec["relname"])
        if match and datetime.strptime(match.group(1), "%Y%m%d").date() < cutoff:
            await conn.execute(f'DROP TABLE "{rec["relname"]}"')
            dropped.append(rec["relname"])
    return dropped


async def longest_retention(conn: asyncpg.Connection, retention_days: int) -> int:
    """The longest retention in force: the default or an org's own (org_limits)."""
    longest = await conn.fetchval("SELECT max(retention_days) FROM org_limits")
    return max(retention_days, longest or 0)


async def trim_per_org(
    conn: asyncpg.Connection,
    table: str,
    column: str,
    retention_days: int,
    longest: int,
    *,
    today: date,
) -> int:
    """Deletes, in batches of TRIM_BATCH, the rows of `table` older (by `column`) than
    their org's retention but younger than the partitions dropped at `longest` days:
    what whole-partition drops cannot do when retentions differ. Returns the count."""
    if longest == retention_days and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM org_limits WHERE retention_days < $1)", retention_days
    ):
        return 0
    oldest_kept = today - timedelta(days=longest)
    statement = (
        f"DELETE FROM {table} WHERE (tableoid, ctid) IN (SELECT t.tableoid, t.ctid"
        f" FROM {table} t LEFT JOIN org_limits l ON l.org = t.org"
        f" WHERE t.{column} >= $1 AND t.{column} < $2::timestamptz - make_interval(days =>"
        f" coalesce(l.retention_days, $3)) LIMIT $4)"
    )
    start = datetime.combine(oldest_kept, datetime.min.time(), UTC)
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    total = 0
    while True:
        done = await conn.execute(statement, start, midnight, retention_days, TRIM_BATCH)
        deleted = int(done.split()[-1])
        total += deleted
        if deleted < TRIM_BATCH:
            return total


@translated
async def maintain(
    pool: asyncpg.Pool, retention_days: int, *, now: datetime | None = None
) -> list[str]:
    """Creates the coming days' partitions, drops those older than the longest retention
    in force, and trims the rows of orgs whose retention is shorter (their own, else
    `retention_days`); returns the dropped partitions' names. One replica at a time."""
    today = (now or datetime.now(UTC)).date()
    dropped: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _MAINTENANCE_LOCK):
            return dropped
        longest = await longest_retention(conn, retention_days)
        cutoff = today - timedelta(days=longest)
        await conn.execute("SELECT hookline_ensure_partitions(1, 7)")
        dropped = await drop_daily_partitions(conn, "delivery_attempts", cutoff)
        trimmed = await trim_per_org(
            conn, "delivery_attempts", "started_at", retention_days, longest, today=today
        )
        # The summary rows of deliveries whose attempts are gone go with them.
        await conn.execute(
            "DELETE FROM deliveries d USING (SELECT d2.id FROM deliveries d2"
            " LEFT JOIN org_limits l ON l.org = d2.org WHERE d2.last_at < $1::timestamptz"
            " - make_interval(days => coalesce(l.retention_days, $2))) old WHERE d.id = old.id",
            datetime.combine(today, datetime.min.time(), UTC),
            retention_days,
        )
    if dropped or trimmed:
        log.info("delivery log retention", partitions=dropped, rows_trimmed=trimmed)
    return dropped


async def maintain_forever(
    pool: asyncpg.Pool, retention_days: int, stop: asyncio.Event, *, interval_s: float = 3600
) -> None:
    """`maintain` now and then every `interval_s` (hourly) until `stop` is set; failures
    are logged."""
    while not stop.is_set():
        try:
            await maintain(pool, retention_days)
        except Exception as exc:  # never stops the loop: the next hour tries again
            log.warning(
                "delivery log maintenance failed", error=repr(exc), outage=is_retryable(exc)
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
