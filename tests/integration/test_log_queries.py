"""The delivery log's read queries (shared/log/queries.py) on small data: keyset pages,
filters, stats math, partition bounds, and that the list and stats plans use indexes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.core.events import format_timestamp
from shared.log import counts
from shared.log import queries as dl
from shared.log.queries import DeliveryQueries

# Its own database: the EXPLAIN test ANALYZEs whole tables, only this module's rows.
pytestmark = pytest.mark.own_database

NOW = datetime.now(UTC).replace(microsecond=0)


async def log(
    pool: asyncpg.Pool,
    org: str,
    webhook_id: uuid.UUID,
    *,
    first_at: datetime,
    status: str = "succeeded",
    event: str = "push",
    durations: Sequence[float] = (10.0,),
    outcomes: Sequence[str] | None = None,
    summary: bool = True,
) -> uuid.UUID:
    """One delivery: an attempt row per duration (a second apart) and its summary row."""
    did = uuid.uuid4()
    outcomes = outcomes or [*["failed"] * (len(durations) - 1), status]
    for n, (ms, outcome) in enumerate(zip(durations, outcomes, strict=True), start=1):
        await pool.execute(
            "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
            " attempt, trigger, outcome, started_at, duration_ms, request_body)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'auto', $7, $8, $9, '{}')",
            did,
            webhook_id,
            org,
            f"evt-{did.hex[:8]}",
            event,
            n,
            outcome,
            first_at + timedelta(seconds=n - 1),
            ms,
        )
    if summary:
        await pool.execute(
            "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status,"
            " attempts, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            did,
            webhook_id,
            org,
            f"evt-{did.hex[:8]}",
            event,
            status,
            len(durations),
            first_at,
            first_at + timedelta(seconds=len(durations) - 1),
        )
    return did


async def all_pages(q: DeliveryQueries, webhook_id: uuid.UUID, **kw: Any) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(100):
        page, more = await q.page(str(webhook_id), after=after, **kw)
        assert len(page) <= kw.get("limit", dl.DEFAULT_LIMIT)
        seen += [d.id for d in page]
        if not more:
            return seen
        after = (page[-1].first_at, uuid.UUID(page[-1].id))
    raise AssertionError("pagination did not end")


async def test_keyset_pages_yield_each_delivery_once_newest_first_with_ties(
    pool: asyncpg.Pool, org: str
) -> None:
    wid = uuid.uuid4()
    made: list[tuple[datetime, uuid.UUID, str, str]] = []
    for i in range(23):
        at = NOW - timedelta(minutes=i // 4)  # groups of four share a timestamp
        status = ("succeeded", "failed", "dead")[i % 3]
        event = ("push", "pull_request.opened", "pull_request.closed")[i % 3 if i % 2 else 0]
        did = await log(pool, org, wid, first_at=at, status=status, event=event)
        made.append((at, did, status, event))
    q = DeliveryQueries(pool)

    def expected(keep: Any = lambda m: True) -> list[str]:
        rows = sorted((m for m in made if keep(m)), key=lambda m: (m[0], m[1]), reverse=True)
        return [str(m[1]) for m in rows]

    for limit in (1, 4, 7, 50):
        assert await all_pages(q, wid, limit=limit) == expected()
    assert await all_pages(q, wid, limit=3, status="failed") == expected(lambda m: m[2] == "failed")
    # The event filter's lateral (one range per type) pages the same way.
    got = await all_pages(q, wid, limit=2, event="pull_request")
    assert got == expected(lambda m: m[3].startswith("pull_request."))
    assert len(got) == len(set(got)) > 2


async def test_filters_combine(pool: asyncpg.Pool, org: str) -> None:
    wid, other = uuid.uuid4(), uuid.uuid4()
    made = []
    for i in range(12):
        at = NOW - timedelta(hours=i)
        status = "failed" if i % 2 else "succeeded"
        event = "pull_request.opened" if i % 3 == 0 else "push"
        made.append((at, await log(pool, org, wid, first_at=at, status=status, event=event)))
        await log(pool, org, other, first_at=at, status=status, event=event)  # never listed
    q = DeliveryQueries(pool)
    since, until = NOW - timedelta(hours=9), NOW - timedelta(hours=2)
    page, more = await q.page(
        str(wid), status="failed", event="pull_request", since=since, until=until
    )
    # i in 3..9 (first_at in [since, until)), odd (failed), multiple of 3 (pull_request): 3, 9
    assert [d.id for d in page] == [str(made[3][1]), str(made[9][1])] and not more
    assert all(d.webhook_id == str(wid) for d in page)
    page, _ = await q.page(str(wid), event="pull_request.opened", until=until, limit=50)
    assert [d.id for d in page] == [str(made[i][1]) for i in (3, 6, 9)]
    page, _ = await q.page(str(wid), since=since, until=until)
    assert len(page) == 7


def percentile_cont(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def test_stats_math(pool: asyncpg.Pool, org: str) -> None:
    wid = uuid.uuid4()
    durations: list[float] = []
    plan = [
        ("succeeded", [12.0]),
        ("succeeded", [30.0, 8.0]),
        ("succeeded", [5.0]),
        ("failed", [200.0]),
        ("dead", [100.0, 150.0, 900.0]),
        ("dead", [60.0]),
        ("pending", [75.0]),
    ]
    for i, (status, ms) in enumerate(plan):
        await log(pool, org, wid, first_at=NOW - timedelta(hours=i), status=status, durations=ms)
        durations += ms
    # A skipped delivery counts as a delivery but its attempt has no duration to measure.
    await log(pool, org, wid, first_at=NOW - timedelta(days=1), status="skipped", durations=[0.0])
    stats = await DeliveryQueries(pool).stats(str(wid))
    assert (stats.deliveries, stats.succeeded, stats.failed) == (8, 3, 3)
    assert stats.success_rate == 0.5  # 3 / (3 + failed 1 + dead 2)
    assert stats.p50_ms == pytest.approx(percentile_cont(durations, 0.5))
    assert stats.p99_ms == pytest.approx(percentile_cont(durations, 0.99))
    assert stats.last_delivery_at is not None
    assert format_timestamp(stats.last_delivery_at) == format_timestamp(NOW)


async def test_get_finds_attempts_around_the_summary_bound(pool: asyncpg.Pool, org: str) -> None:
    q = DeliveryQueries(pool)
    wid = uuid.uuid4()
    did = await log(pool, org, wid, first_at=NOW, status="dead", durations=[1.0, 2.0])
    # An attempt logged before the summary's first_at (a batch the upsert skipped), within
    # SUMMARY_SLACK, is still found.
    early = NOW - dl.SUMMARY_SLACK + timedelta(minutes=5)
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at) VALUES ($1, $2, $3, 'e', 'push', 0, 'auto',"
        " 'failed', $4)",
        did,
        wid,
        org,
        early,
    )
    found = await q.get(str(did), org)
    assert [a.attempt for a in found.attempts] == [0, 1, 2] and found.status == "dead"
    # No summary row at all: the attempts are read without a bound.
    lone = await log(pool, org, wid, first_at=NOW - timedelta(days=3), summary=False)
    assert (await q.get(str(lone), None)).status == "succeeded"


async def test_list_and_stats_plans_use_indexes(pool: asyncpg.Pool, org: str) -> None:
    """Enough rows (120 webhooks) and fresh statistics that the planner prefers the
    indexes by itself; no planner switches."""
    hot = uuid.uuid4()
    await pool.execute("SELECT hookline_ensure_partitions(1, 1)")
    await pool.execute(
        "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
        " first_at, last_at)"
        " SELECT gen_random_uuid(), CASE WHEN g % 120 = 0 THEN $1 ELSE"
        " md5($2 || (g % 120))::uuid END, $2, 'e' || g,"
        " (ARRAY['push', 'pull_request.opened', 'issue.opened'])[1 + g % 3],"
        " (ARRAY['succeeded', 'failed', 'dead', 'pending'])[1 + g % 4], 1,"
        " now() - g * interval '1 second', now() - g * interval '1 second'"
        " FROM generate_series(1, 18000) g",
        hot,
        org,
    )
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at, duration_ms)"
        " SELECT id, webhook_id, org, event_id, event_type, 1, 'auto', 'succeeded', first_at,"
        " random() * 100 FROM deliveries WHERE org = $1",
        org,
    )
    await counts.fold(pool)  # the 18,000 inserts' deltas into the totals
    try:
        for table in ("deliveries", "delivery_attempts", "delivery_counts"):
            await pool.execute(f"ANALYZE {table}")
        ours = [
            r[0]
            for r in await pool.fetch(
                "SELECT DISTINCT tableoid::regclass::text FROM delivery_attempts WHERE org = $1",
                org,
            )
        ]
        statements = [
            dl.page_query(hot),
            dl.page_query(hot, status="failed"),
            dl.page_query(hot, event="pull_request", since=NOW - timedelta(hours=1)),
            (dl.STATS_PERCENTILES, [hot, dl.STATS_WINDOW_DAYS, dl.STATS_MAX_ATTEMPTS]),
            (dl.STATS_LAST, [hot]),
        ]
        for sql, args in statements:
            plan = "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + sql, *args))
            assert "Index" in plan, plan
            assert "Seq Scan on deliveries" not in plan, plan
            # Empty or near-empty partitions may be seq-scanned; those holding rows not.
            assert not any(f"Seq Scan on {part} " in plan for part in ours), plan
        # Counts read the kept totals and pending deltas (a few rows a webhook at any size),
        # never the webhook's deliveries.
        kept = "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + counts.COUNTS, hot))
        assert "delivery_counts" in kept and " on deliveries" not in kept, kept
    finally:
        await pool.execute("DELETE FROM delivery_attempts WHERE org = $1", org)
        await pool.execute("DELETE FROM deliveries WHERE org = $1", org)


async def _attempts(
    pool: asyncpg.Pool, org: str, wid: uuid.UUID, n: int, *, newest: datetime, ms: float
) -> None:
    """`n` attempts of `ms` each, a second apart, the newest at `newest`."""
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at, duration_ms, request_body)"
        " SELECT gen_random_uuid(), $1, $2, 'e-' || i, 'push', 1, 'auto', 'succeeded',"
        " $3::timestamptz - make_interval(secs => i), $4, '{}' FROM generate_series(0, $5 - 1) i",
        wid,
        org,
        newest,
        ms,
        n,
    )


async def test_stats_latency_covers_the_last_7_days_only(pool: asyncpg.Pool, org: str) -> None:
    wid = uuid.uuid4()
    await _attempts(pool, org, wid, 10, newest=NOW, ms=10.0)
    # Slow attempts eight days ago: outside the window, they must not weigh.
    await _attempts(pool, org, wid, 50, newest=NOW - timedelta(days=8), ms=90_000.0)
    stats = await DeliveryQueries(pool).stats(str(wid))
    assert (stats.p50_ms, stats.p99_ms) == (10.0, 10.0)
    # Six days ago they count.
    await _attempts(pool, org, wid, 50, newest=NOW - timedelta(days=6), ms=90_000.0)
    stats = await DeliveryQueries(pool).stats(str(wid))
    assert stats.p99_ms == 90_000.0


async def test_stats_latency_reads_at_most_the_newest_10000_attempts(
    pool: asyncpg.Pool, org: str
) -> None:
    wid = uuid.uuid4()
    assert dl.STATS_MAX_ATTEMPTS == 10_000
    await _attempts(pool, org, wid, 10_000, newest=NOW, ms=10.0)
    # 300 slow ones just older than those 10,000 (3 % of all: they would set the p99).
    await _attempts(pool, org, wid, 300, newest=NOW - timedelta(hours=4), ms=90_000.0)
    stats = await DeliveryQueries(pool).stats(str(wid))
    assert (stats.p50_ms, stats.p99_ms) == (10.0, 10.0)
