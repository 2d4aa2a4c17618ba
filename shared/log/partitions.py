"""Retention of the delivery log: daily partitions are created ahead and dropped once
older than the longest retention in force, with the summary rows of the deliveries they
held; an org with a shorter retention (org_limits) has its older rows deleted in batches.

Every clean-up is bounded: it reads only the partitions it empties, a batch at a time,
and each batch commits on its own (the replica doing it holds a session advisory lock,
not one long transaction), so an hourly pass never holds a day's deletions open."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog

from shared.core.errors import is_retryable
from shared.db import translated

log = structlog.get_logger(component="delivery_log")

# Any fixed number: one replica at a time creates or drops partitions.
_MAINTENANCE_LOCK = 0x686C6F67


TRIM_BATCH = 10_000  # rows deleted per statement when an org's retention is shorter
SUMMARY_BATCH = 10_000  # deliveries of an expiring partition whose summaries go at once

# A summary row whose delivery's last attempt is past its org's retention ($3 days by
# default) as of midnight $2. A delivery attempted again since (a retry, a redelivery)
# keeps its summary until its later attempts go too.
_PAST_RETENTION = (
    "d.last_at < $2::timestamptz - make_interval(days => coalesce((SELECT l.retention_days"
    " FROM org_limits l WHERE l.org = d.org), $3))"
)
# Those summaries among the deliveries $1.
_FORGET_SUMMARIES = f"DELETE FROM deliveries d WHERE d.id = ANY($1::uuid[]) AND {_PAST_RETENTION}"
# Appended to a statement whose `gone` CTE deleted attempts RETURNING delivery_id: the
# summaries of those deliveries, in the same statement.
_AND_THEIR_SUMMARIES = (
    ", forgotten AS (DELETE FROM deliveries d USING (SELECT DISTINCT delivery_id FROM gone) g"
    f" WHERE d.id = g.delivery_id AND {_PAST_RETENTION} RETURNING 1)"
    " SELECT count(*) FROM gone"
)
_NIL = uuid.UUID(int=0)  # below every delivery id: where a walk of a partition starts


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


async def _in_batches(delete: Callable[[], Awaitable[int]]) -> int:
    """Runs `delete` (one statement deleting at most TRIM_BATCH rows, returning how many)
    until a run deletes fewer; returns the total."""
    total = 0
    while True:
        deleted = await delete()
        total += deleted
        if deleted < TRIM_BATCH:
            return total


@contextlib.asynccontextmanager
async def exclusive(pool: asyncpg.Pool, key: int) -> AsyncIterator[asyncpg.Connection | None]:
    """A connection holding the session advisory lock `key`, or None while another replica
    holds it. Statements on it commit one by one. The lock goes with the session if the
    connection breaks (and asyncpg's reset releases advisory locks on release anyway)."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            yield None
            return
        try:
            yield conn
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def expired_partitions(conn: asyncpg.Connection, parent: str, cutoff: date) -> list[str]:
    """The daily partitions `<parent>_YYYYMMDD` of days before `cutoff`, oldest first."""
    pattern = re.compile(rf"^{parent}_(\d{{8}})$")
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        parent,
    )
    expired = []
    for rec in names:
        match = pattern.match(rec["relname"])
        if match and datetime.strptime(match.group(1), "%Y%m%d").date() < cutoff:
            expired.append(rec["relname"])
    return sorted(expired)


async def drop_daily_partitions(conn: asyncpg.Connection, parent: str, cutoff: date) -> list[str]:
    """Drops the daily partitions `<parent>_YYYYMMDD` of days before `cutoff`; their names."""
    dropped = await expired_partitions(conn, parent, cutoff)
    for name in dropped:
        await conn.execute(f'DROP TABLE "{name}"')
    return dropped


async def longest_retention(conn: asyncpg.Connection, retention_days: int) -> int:
    """The longest retention in force: the default or an org's own (org_limits)."""
    longest = await conn.fetchval("SELECT max(retention_days) FROM org_limits")
    return max(retention_days, longest or 0)


async def forget_summaries_of(
    conn: asyncpg.Connection, partition: str, retention_days: int, *, today: date
) -> int:
    """Deletes the summary rows of the deliveries attempted in `partition` (about to be
    dropped) whose last attempt is past their org's retention: SUMMARY_BATCH deliveries
    at a time, walked in id order along the partition's index, each batch a statement of
    its own. Only that partition is read, never the whole summary table. Returns the
    count."""
    midnight = _midnight(today)
    ids_after = (
        f'SELECT DISTINCT delivery_id FROM "{partition}" WHERE delivery_id > $1'
        " ORDER BY delivery_id LIMIT $2"
    )
    after, total = _NIL, 0
    while True:
        ids = [r["delivery_id"] for r in await conn.fetch(ids_after, after, SUMMARY_BATCH)]
        if not ids:
            return total
        done = await conn.execute(_FORGET_SUMMARIES, ids, midnight, retention_days)
        total += int(done.split()[-1])
        if len(ids) < SUMMARY_BATCH:
            return total
        after = ids[-1]


async def trim_per_org(
    conn: asyncpg.Connection,
    table: str,
    column: str,
    retention_days: int,
    longest: int,
    *,
    today: date,
    summaries: bool = False,
) -> int:
    """Deletes, in batches of TRIM_BATCH (a statement and a commit each), the rows of
    `table` older (by `column`) than their org's retention but younger than the
    partitions dropped at `longest` days: what whole-partition drops cannot do when
    retentions differ. Only the partitions older than the shortest retention in force
    are read. With `summaries` (the attempts table), the summary rows of the deliveries
    whose attempts a batch deleted go in the same statement once their last attempt is
    past the retention too. Returns the count of `table`'s rows deleted."""
    shortest = await conn.fetchval(
        "SELECT least($1::int, min(retention_days)) FROM org_limits", retention_days
    )
    if longest == retention_days and shortest == retention_days:
        return 0
    oldest_kept = today - timedelta(days=longest)
    pick = (
        f"SELECT t.tableoid, t.ctid FROM {table} t LEFT JOIN org_limits l ON l.org = t.org"
        f" WHERE t.{column} >= $1 AND t.{column} < $5 AND t.{column} < $2::timestamptz"
        f" - make_interval(days => coalesce(l.retention_days, $3)) LIMIT $4"
    )
    delete = f"WITH gone AS (DELETE FROM {table} WHERE (tableoid, ctid) IN ({pick})"
    if summaries:
        statement = f"{delete} RETURNING delivery_id){_AND_THEIR_SUMMARIES}"
    else:
        statement = f"{delete} RETURNING 1) SELECT count(*) FROM gone"
    midnight = _midnight(today)
    args = (_midnight(oldest_kept), midnight, retention_days, TRIM_BATCH)
    newest = midnight - timedelta(days=shortest)
    return await _in_batches(lambda: conn.fetchval(statement, *args, newest))


async def trim_default_partition(
    conn: asyncpg.Connection, cutoff: date, retention_days: int, *, today: date
) -> int:
    """Deletes the attempts in `delivery_attempts_default` (times no daily partition
    covered) started before `cutoff`, with their deliveries' summaries past retention,
    TRIM_BATCH a statement. It is empty in the normal course; no partition drop reaches it.
    Returns the count."""
    statement = (
        "WITH gone AS (DELETE FROM delivery_attempts_default WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM delivery_attempts_default WHERE started_at < $1 LIMIT $4))"
        f" RETURNING delivery_id){_AND_THEIR_SUMMARIES}"
    )
    args = (_midnight(cutoff), _midnight(today), retention_days, TRIM_BATCH)
    return await _in_batches(lambda: conn.fetchval(statement, *args))


@translated
async def maintain(
    pool: asyncpg.Pool, retention_days: int, *, now: datetime | None = None
) -> list[str]:
    """Creates the coming days' partitions; for each partition older than the longest
    retention in force, deletes its deliveries' summary rows and then drops it; deletes
    what the default partition holds from before then; trims the rows of orgs whose
    retention is shorter (their own, else `retention_days`). Summaries go with the last
    of their delivery's attempts. Returns the dropped partitions' names. One replica at a
    time."""
    today = (now or datetime.now(UTC)).date()
    dropped: list[str] = []
    forgotten = 0
    async with exclusive(pool, _MAINTENANCE_LOCK) as conn:
        if conn is None:
            return dropped
        longest = await longest_retention(conn, retention_days)
        cutoff = today - timedelta(days=longest)
        await conn.execute("SELECT hookline_ensure_partitions(1, 7)")
        for name in await expired_partitions(conn, "delivery_attempts", cutoff):
            forgotten += await forget_summaries_of(conn, name, retention_days, today=today)
            await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
        trimmed = await trim_default_partition(conn, cutoff, retention_days, today=today)
        trimmed += await trim_per_org(
            conn,
            "delivery_attempts",
            "started_at",
            retention_days,
            longest,
            today=today,
            summaries=True,
        )
    if dropped or trimmed:
        log.info(
            "delivery log retention",
            partitions=dropped,
            summaries_deleted=forgotten,
            rows_trimmed=trimmed,
        )
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
