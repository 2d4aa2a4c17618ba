"""Retention per org: partitions drop at the longest retention in force, and an org with
a shorter one loses its older rows (attempts, summaries, inbound calls) in batches."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.config import Settings
from shared.inbound_maintenance import maintain as maintain_inbound
from shared.log import partitions
from shared.log.partitions import maintain
from tests.integration.sender_support import one_partition_topics, start_sender

# Its own database: retention goes by the longest in force over every org's limits.
pytestmark = pytest.mark.own_database


async def _insert_attempt(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, org: str, at: datetime, attempt: int = 1
) -> None:
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at) VALUES ($1, $2, $3, 'e', 'push', $5, 'auto',"
        " 'succeeded', $4)",
        delivery_id,
        uuid.uuid4(),
        org,
        at,
        attempt,
    )


async def _attempt(pool: asyncpg.Pool, org: str, days_ago: float) -> uuid.UUID:
    delivery_id, at = uuid.uuid4(), datetime.now(UTC) - timedelta(days=days_ago)
    await _insert_attempt(pool, delivery_id, org, at)
    await pool.execute(
        "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
        " first_at, last_at) VALUES ($1, $2, $3, 'e', 'push', 'succeeded', 1, $4, $4)",
        delivery_id,
        uuid.uuid4(),
        org,
        at,
    )
    return delivery_id


async def _kept(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    attempts = {
        r["delivery_id"]
        for r in await pool.fetch(
            "SELECT delivery_id FROM delivery_attempts WHERE delivery_id = ANY($1)", ids
        )
    }
    summaries = {
        r["id"] for r in await pool.fetch("SELECT id FROM deliveries WHERE id = ANY($1)", ids)
    }
    assert attempts == summaries
    return attempts


async def _maintained(pool: asyncpg.Pool) -> None:
    for _ in range(50):  # another replica (test) may hold the maintenance lock a moment
        async with pool.acquire() as conn:
            free = await conn.fetchval("SELECT pg_try_advisory_lock(x'686C6F67'::int)")
            if free:
                await conn.fetchval("SELECT pg_advisory_unlock(x'686C6F67'::int)")
                break
        await asyncio.sleep(0.1)
    await maintain(pool, 30)


@pytest.fixture
async def limits(pool: asyncpg.Pool) -> AsyncIterator[list[str]]:
    orgs: list[str] = []
    yield orgs
    await pool.execute("DELETE FROM org_limits WHERE org = ANY($1)", orgs)


async def test_an_org_with_a_shorter_retention_loses_its_older_rows_only(
    pool: asyncpg.Pool, org: str, limits: list[str]
) -> None:
    short, other = org + "-short", org + "-default"
    limits.append(short)
    await pool.execute("INSERT INTO org_limits (org, retention_days) VALUES ($1, 2)", short)
    old_short = await _attempt(pool, short, 5)
    new_short = await _attempt(pool, short, 1)
    old_other = await _attempt(pool, other, 5)
    await _maintained(pool)
    assert await _kept(pool, [old_short, new_short, old_other]) == {new_short, old_other}


async def test_a_longer_retention_keeps_its_partition_and_trims_the_others(
    pool: asyncpg.Pool, org: str, limits: list[str]
) -> None:
    day = (datetime.now(UTC) - timedelta(days=45)).date()
    name = f"delivery_attempts_{day:%Y%m%d}"
    await pool.execute(
        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF delivery_attempts'
        f" FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')"
    )
    long, other = org + "-long", org + "-default"
    limits.append(long)
    await pool.execute("INSERT INTO org_limits (org, retention_days) VALUES ($1, 60)", long)
    kept_long = await _attempt(pool, long, 44.5)
    gone_other = await _attempt(pool, other, 44.5)
    await _maintained(pool)
    assert await pool.fetchval("SELECT to_regclass($1)", name) is not None
    assert await _kept(pool, [kept_long, gone_other]) == {kept_long}
    # With the longer retention gone, the partition goes at the default's 30 days.
    await pool.execute("DELETE FROM org_limits WHERE org = $1", long)
    await _maintained(pool)
    assert await pool.fetchval("SELECT to_regclass($1)", name) is None


async def test_inbound_calls_follow_their_orgs_retention(
    pool: asyncpg.Pool, org: str, limits: list[str]
) -> None:
    short = org + "-short"
    limits.append(short)
    await pool.execute("INSERT INTO org_limits (org, retention_days) VALUES ($1, 2)", short)
    ids = []
    for who, days in ((short, 5), (short, 1), (org, 5)):
        call_id = uuid.uuid4()
        ids.append(call_id)
        await pool.execute(
            "INSERT INTO inbound_invocations (id, inbound_webhook_id, org, received_at, result,"
            " status) VALUES ($1, 'ih_x', $2, $3, 'accepted', 202)",
            call_id,
            who,
            datetime.now(UTC) - timedelta(days=days),
        )
    await maintain_inbound(pool, retention_days=30)
    kept = {
        r["id"]
        for r in await pool.fetch("SELECT id FROM inbound_invocations WHERE id = ANY($1)", ids)
    }
    assert kept == {ids[1], ids[2]}


async def _partition(pool: asyncpg.Pool, days_ago: int) -> str:
    """The delivery log's partition of that day, made if missing; its name. (A day whose
    rows another test left in the default partition cannot have one.)"""
    day: date = (datetime.now(UTC) - timedelta(days=days_ago)).date()
    name = f"delivery_attempts_{day:%Y%m%d}"
    await pool.execute(
        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF delivery_attempts'
        f" FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')"
    )
    return name


async def _gone(pool: asyncpg.Pool, name: str, task: asyncio.Task[None], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await pool.fetchval("SELECT to_regclass($1)", name) is not None:
        if task.done():
            task.result()  # raises what stopped the sender
            raise AssertionError("the sender stopped")
        assert asyncio.get_running_loop().time() < deadline, f"{name} still there"
        await asyncio.sleep(0.1)


async def test_a_running_sender_drops_expired_partitions_on_its_maintenance_loop(
    provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    """HOOKLINE_RETENTION_DAYS=3 through a sender replica `serve`d on this module's
    database, its maintenance every 0.5 s instead of hourly: a partition past the retention
    goes at the first pass, one made after that at a later pass; younger ones stay."""
    settings = dataclasses.replace(provisioned, retention_days=3)
    prefix, topics = await one_partition_topics(settings, "retention")
    expired, young = await _partition(pool, 10), await _partition(pool, 2)
    gone_row, kept_row = await _attempt(pool, org, 10), await _attempt(pool, org, 2)
    sender = start_sender(settings, topics, prefix, maintenance_interval_s=0.5)
    try:
        await _gone(pool, expired, sender.task, timeout=60)
        # Made once the first pass is over: only a later pass of the loop can drop it.
        later = await _partition(pool, 8)
        await _attempt(pool, org, 8)
        await _gone(pool, later, sender.task, timeout=30)
    finally:
        sender.stop.set()
        await asyncio.wait_for(sender.task, 30)
    assert await pool.fetchval("SELECT to_regclass($1)", young) == young
    assert await _kept(pool, [gone_row, kept_row]) == {kept_row}


async def _attempt_of(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, org: str, days_ago: float
) -> None:
    """One more attempt of a delivery, and its summary's last_at moved to it."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    await _insert_attempt(pool, delivery_id, org, at, attempt=2)
    await pool.execute(
        "UPDATE deliveries SET last_at = $2, attempts = attempts + 1 WHERE id = $1", delivery_id, at
    )


def _deletes_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, str]]:
    """(statement's start, whether it ran inside a transaction block, its status) of every
    DELETE (or data-modifying WITH) the maintenance runs."""
    seen: list[tuple[str, bool, str]] = []
    real_execute, real_fetchval = asyncpg.Connection.execute, asyncpg.Connection.fetchval

    async def execute(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> str:
        in_block = self.is_in_transaction()
        done: str = await real_execute(self, query, *args, **kw)
        if query.startswith(("DELETE", "WITH")):
            seen.append((query[:60], in_block, done))
        return done

    async def fetchval(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> Any:
        in_block = self.is_in_transaction()
        value = await real_fetchval(self, query, *args, **kw)
        if query.startswith(("DELETE", "WITH")):
            seen.append((query[:60], in_block, f"DELETE {value}"))
        return value

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    monkeypatch.setattr(asyncpg.Connection, "fetchval", fetchval)
    return seen


async def test_an_expired_partitions_summaries_go_in_batches_each_committed_alone(
    pool: asyncpg.Pool, org: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summaries of the deliveries attempted in a partition past the retention go
    before it is dropped, SUMMARY_BATCH deliveries per statement, each statement its own
    transaction; a delivery attempted again since (redelivered) keeps its summary."""
    monkeypatch.setattr(partitions, "SUMMARY_BATCH", 2)
    name = await _partition(pool, 45)
    old = [await _attempt(pool, org, 45) for _ in range(5)]  # on that partition's day
    redelivered = await _attempt(pool, org, 45)
    await _attempt_of(pool, redelivered, org, 1)
    seen = _deletes_seen(monkeypatch)
    await _maintained(pool)

    assert await pool.fetchval("SELECT to_regclass($1)", name) is None
    summaries = {
        r["id"] for r in await pool.fetch("SELECT id FROM deliveries WHERE id = ANY($1)", old)
    }
    assert summaries == set()
    assert await pool.fetchval("SELECT last_at FROM deliveries WHERE id = $1", redelivered)
    forgets = [s for s in seen if s[0].startswith("DELETE FROM deliveries d WHERE d.id = ANY")]
    assert len(forgets) >= 3, seen  # 6 deliveries (and any other test's), 2 at a time
    assert all(int(done.split()[-1]) <= 2 for _, _, done in forgets), forgets
    assert not any(in_block for _, in_block, _ in seen), seen


async def test_a_shorter_retention_trims_attempts_and_summaries_in_separate_commits(
    pool: asyncpg.Pool, org: str, limits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An org's shorter retention: its attempts go TRIM_BATCH at a time, each batch's
    summaries in the same statement, and no statement runs in a transaction block that
    would hold the whole clean-up open."""
    monkeypatch.setattr(partitions, "TRIM_BATCH", 2)
    short = org + "-short"
    limits.append(short)
    await pool.execute("INSERT INTO org_limits (org, retention_days) VALUES ($1, 2)", short)
    old = [await _attempt(pool, short, 5) for _ in range(5)]
    retried = await _attempt(pool, short, 5)
    await _attempt_of(pool, retried, short, 1)
    new = await _attempt(pool, short, 1)
    seen = _deletes_seen(monkeypatch)
    await _maintained(pool)

    left = {
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM deliveries WHERE id = ANY($1)", [*old, retried, new]
        )
    }
    assert left == {retried, new}
    attempts = await pool.fetch(
        "SELECT delivery_id, attempt FROM delivery_attempts WHERE delivery_id = ANY($1)",
        [*old, retried, new],
    )
    assert sorted((r["delivery_id"] == retried, r["attempt"]) for r in attempts) == [
        (False, 1),  # new's
        (True, 2),  # the retried delivery's younger attempt
    ]
    trims = [s for s in seen if s[0].startswith("WITH gone AS (DELETE FROM delivery_att")]
    deleted = [int(done.split()[-1]) for _, _, done in trims]
    # At most 2 a statement, until one takes fewer: 6 of this test's (and any other's).
    assert max(deleted) <= 2 and sum(deleted) >= 6 and deleted[-1] < 2, deleted
    assert not any(in_block for _, in_block, _ in seen), seen


async def test_attempts_no_daily_partition_held_go_from_the_default_one(
    pool: asyncpg.Pool, org: str
) -> None:
    """Attempts of days without a partition of their own sit in the default partition,
    which no drop reaches: those past the retention are deleted there, with their
    summaries; younger ones stay."""
    gone = await _attempt(pool, org, 400)  # no test makes that day's partition
    kept = await _attempt(pool, org, 20)
    in_default = await pool.fetchval(
        "SELECT count(*) FROM delivery_attempts_default WHERE delivery_id = ANY($1)", [gone, kept]
    )
    assert in_default == 2
    await _maintained(pool)
    assert await _kept(pool, [gone, kept]) == {kept}
