"""The delivery log writer against real PostgreSQL: COPY, the summary, health, retention."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.core.attempts import AttemptRow
from shared.core.errors import RowRejected
from shared.core.health import FailureStreak, should_disable
from shared.log import counts
from shared.log.partitions import maintain
from shared.log.writer import DeliveryLog
from tests.integration.clients import running

# Its own database: maintenance goes by the longest retention in force over every org.
pytestmark = pytest.mark.own_database


def _row(
    delivery: str, webhook: str, attempt: int, outcome: str, at: datetime, **kw: object
) -> AttemptRow:
    return AttemptRow(
        delivery_id=delivery,
        webhook_id=webhook,
        org="org-log",
        event_id="ev-" + delivery[:8],
        event_type="push",
        attempt=attempt,
        trigger="auto" if attempt == 1 else "retry",
        outcome=outcome,
        started_at=at,
        duration_ms=12.5,
        request_headers={"X-Hookline-Attempt": str(attempt), "X-Hub-Signature-256": "sha256=ab"},
        request_body='{"event":"push"}',
        **kw,  # type: ignore[arg-type]
    )


async def test_attempts_and_summary_are_written_together(pool: asyncpg.Pool) -> None:
    dlog = DeliveryLog(pool, flush_interval=0.01)
    async with running(dlog, dlog.close):
        delivery, webhook = str(uuid.uuid4()), str(uuid.uuid4())
        t0 = datetime.now(UTC)
        first = dlog.append(
            _row(
                delivery,
                webhook,
                1,
                "failed",
                t0,
                response_status=500,
                response_headers={"a": "b"},
                response_body="nope",
                error="http_status",
                resolved_ip="127.0.0.1",
                next_attempt_at=t0 + timedelta(seconds=60),
            )
        )
        await asyncio.wait_for(first, 10)
        summary = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", uuid.UUID(delivery))
        assert summary["status"] == "failed"
        assert summary["next_attempt_at"] is not None
        second = dlog.append(_row(delivery, webhook, 2, "succeeded", t0 + timedelta(seconds=61)))
        # An older attempt arriving late (redelivered) does not roll the summary back.
        late = dlog.append(_row(delivery, webhook, 1, "failed", t0, error="http_status"))
        await asyncio.wait_for(asyncio.gather(second, late), 10)
    rows = await pool.fetch(
        "SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY started_at, attempt",
        uuid.UUID(delivery),
    )
    assert [r["attempt"] for r in rows] == [1, 1, 2]
    assert rows[0]["request_headers"]["X-Hookline-Attempt"] == "1"
    assert rows[0]["response_body"] == "nope" and rows[0]["resolved_ip"] == "127.0.0.1"
    summary = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", uuid.UUID(delivery))
    assert summary["status"] == "succeeded"
    assert summary["attempts"] == 2
    assert summary["next_attempt_at"] is None
    assert summary["first_at"] == t0


async def test_a_failed_manual_attempt_keeps_a_dead_delivery_dead(pool: asyncpg.Pool) -> None:
    dlog = DeliveryLog(pool, flush_interval=0.01)
    async with running(dlog, dlog.close):
        delivery, webhook = str(uuid.uuid4()), str(uuid.uuid4())
        t0 = datetime.now(UTC)
        # Both in one batch: the summary takes the latest of the two.
        a = dlog.append(_row(delivery, webhook, 1, "dead", t0, error="timeout"))
        b = dlog.append(
            _row(delivery, webhook, 2, "failed", t0 + timedelta(seconds=1), error="connect")
        )
        await asyncio.wait_for(asyncio.gather(a, b), 10)
        status = await pool.fetchval(
            "SELECT status FROM deliveries WHERE id = $1", uuid.UUID(delivery)
        )
        assert status == "failed"  # same batch: no earlier dead row to keep
        c = dlog.append(_row(delivery, webhook, 3, "dead", t0 + timedelta(seconds=2)))
        await asyncio.wait_for(c, 10)
        d = dlog.append(
            _row(delivery, webhook, 4, "failed", t0 + timedelta(seconds=3), error="connect")
        )
        await asyncio.wait_for(d, 10)
    summary = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", uuid.UUID(delivery))
    assert summary["status"] == "dead"
    assert summary["attempts"] == 4
    assert summary["last_error"] == "connect"


async def test_consecutive_failures_cross_the_threshold_and_success_resets(
    pool: asyncpg.Pool,
) -> None:
    seen: list[FailureStreak] = []

    async def on_failures(items: list[FailureStreak]) -> None:
        seen.extend(items)

    dlog = DeliveryLog(pool, flush_interval=0.01, on_failures=on_failures)
    async with running(dlog, dlog.close):
        webhook = str(uuid.uuid4())
        t0 = datetime.now(UTC) - timedelta(seconds=5)
        for _ in range(2):
            await dlog.append(_row(str(uuid.uuid4()), webhook, 1, "failed", t0, error="timeout"))
        await dlog.append(_row(str(uuid.uuid4()), webhook, 1, "skipped", t0))
        await dlog.append(_row(str(uuid.uuid4()), webhook, 1, "succeeded", t0))
        health = await pool.fetchrow(
            "SELECT * FROM webhook_health WHERE webhook_id = $1", uuid.UUID(webhook)
        )
        assert health["consecutive_failures"] == 0
        for i in range(3):
            await dlog.append(
                _row(
                    str(uuid.uuid4()),
                    webhook,
                    1,
                    "failed",
                    t0 + timedelta(seconds=i),
                    error="http_status",
                )
            )
        await dlog.flush()
    health = await pool.fetchrow(
        "SELECT * FROM webhook_health WHERE webhook_id = $1", uuid.UUID(webhook)
    )
    assert health["consecutive_failures"] == 3
    assert health["first_failure_at"] == t0
    # The log reports each batch's streaks; the rule picks those at the threshold.
    assert {u.webhook_id for u in seen} == {webhook}
    now = datetime.now(UTC)
    unhealthy = [
        u for u in seen if should_disable(u, now=now, max_failures=3, max_span=timedelta(0))
    ]
    assert unhealthy and unhealthy[-1].failures == 3


async def test_maintenance_creates_ahead_and_drops_expired_partitions(
    pool: asyncpg.Pool,
) -> None:
    name = "delivery_attempts_20000101"
    await pool.execute(
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF delivery_attempts"
        " FOR VALUES FROM ('2000-01-01 00:00+00') TO ('2000-01-02 00:00+00')"
    )
    old, recent = uuid.uuid4(), uuid.uuid4()
    for delivery, at in ((old, datetime(2000, 1, 1, 12, tzinfo=UTC)), (recent, None)):
        at = at or datetime.now(UTC) - timedelta(days=1)
        await pool.execute(
            "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status,"
            " attempts, first_at, last_at) VALUES ($1, $2, 'o', 'e', 'push', 'succeeded', 1,"
            " $3, $3)",
            delivery,
            uuid.uuid4(),
            at,
        )
        await pool.execute(
            "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id,"
            " event_type, attempt, trigger, outcome, started_at) VALUES ($1, $2, 'o', 'e',"
            " 'push', 1, 'auto', 'succeeded', $3)",
            delivery,
            uuid.uuid4(),
            at,
        )
    dropped: list[str] = []
    for _ in range(50):  # another replica may hold the maintenance lock for a moment
        dropped = await maintain(pool, 30)
        if await pool.fetchval("SELECT to_regclass($1)", name) is None:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT to_regclass($1)", name) is None
    ahead = (datetime.now(UTC) + timedelta(days=7)).strftime("delivery_attempts_%Y%m%d")
    assert await pool.fetchval("SELECT to_regclass($1)", ahead) is not None
    today = datetime.now(UTC).strftime("delivery_attempts_%Y%m%d")
    assert today not in dropped
    # Summary rows past the retention go with their attempts; recent ones stay.
    kept = {
        r["id"]
        for r in await pool.fetch("SELECT id FROM deliveries WHERE id = ANY($1)", [old, recent])
    }
    assert kept == {recent}


async def test_unstorable_rows_never_block_the_log(pool: asyncpg.Pool) -> None:
    dlog = DeliveryLog(pool, flush_interval=0.01)
    async with running(dlog, dlog.close):
        webhook = str(uuid.uuid4())
        t0 = datetime.now(UTC)
        ids = [str(uuid.uuid4()) for _ in range(4)]
        # Appended in one tick: one batch, which PostgreSQL (or orjson) refuses as a whole.
        good = dlog.append(_row(ids[0], webhook, 1, "succeeded", t0, response_body="ok"))
        nul = dlog.append(
            _row(ids[1], webhook, 1, "failed", t0, response_body="a\x00b", error="http_status")
        )
        surrogate = dlog.append(
            _row(ids[2], webhook, 1, "failed", t0, response_headers={"X-Name": "caf\udce9"})
        )
        bad_uuid = dlog.append(_row("not-a-uuid", webhook, 1, "failed", t0))
        huge = dlog.append(_row(ids[3], webhook, 2**31, "failed", t0))
        await asyncio.wait_for(asyncio.gather(good, nul, surrogate), 10)
        for fut in (bad_uuid, huge):
            with pytest.raises(RowRejected):
                await asyncio.wait_for(fut, 10)
        # And the log keeps writing what follows.
        after = str(uuid.uuid4())
        await asyncio.wait_for(dlog.append(_row(after, webhook, 1, "succeeded", t0)), 10)
    rows = {
        str(r["delivery_id"]): r
        for r in await pool.fetch(
            "SELECT * FROM delivery_attempts WHERE webhook_id = $1", uuid.UUID(webhook)
        )
    }
    assert set(rows) == {ids[0], ids[1], ids[2], after}
    assert rows[ids[0]]["response_body"] == "ok"  # untouched
    # The refused rows were kept as sanitised copies: headers and response dropped with a
    # note, the request body (what a redelivery sends) and the error class kept.
    for i in (1, 2):
        row = rows[ids[i]]
        assert row["response_headers"] is None and row["request_headers"] is None
        assert "not stored" in row["response_body"]
        assert row["request_body"] == '{"event":"push"}'
        assert row["outcome"] == "failed"
    assert rows[ids[1]]["error"] == "http_status"
    summary = await pool.fetchval("SELECT status FROM deliveries WHERE id = $1", uuid.UUID(ids[1]))
    assert summary == "failed"


async def test_every_storable_value_comes_back_as_it_was_written(pool: asyncpg.Pool) -> None:
    """The batch travels as one JSON document: text PostgreSQL unescapes must come back as
    the sender had it (escapes, controls other than NUL, non-BMP, U+2028), null headers
    as SQL NULL, and times to the microsecond."""
    dlog = DeliveryLog(pool, flush_interval=0.01)
    awkward = 'a\\u0000 "q" \\ \x01\x1f \u00e9 \u2028 \U0001f600 </script>'
    t0 = datetime(2026, 12, 4, 17, 39, 59, 310344, tzinfo=UTC)
    delivery, webhook = str(uuid.uuid4()), str(uuid.uuid4())
    row = _row(
        delivery,
        webhook,
        1,
        "failed",
        t0,
        response_status=502,
        response_headers=None,
        response_body=awkward,
        error="http_status",
        resolved_ip="::1",
        next_attempt_at=t0 + timedelta(seconds=30, microseconds=1),
    )
    row = dataclasses.replace(
        row,
        event_id="ev-" + awkward,
        request_headers={"X-Awkward": awkward, "X-Empty": ""},
        request_body=awkward,
        duration_ms=0.125,
    )
    async with running(dlog, dlog.close):
        await asyncio.wait_for(dlog.append(row), 10)
    got = await pool.fetchrow(
        "SELECT *, response_headers IS NULL AS no_headers FROM delivery_attempts"
        " WHERE delivery_id = $1",
        uuid.UUID(delivery),
    )
    assert got is not None and got["no_headers"]
    for name in ("event_id", "request_headers", "request_body", "response_body", "resolved_ip"):
        assert got[name] == getattr(row, name), name
    assert (got["started_at"], got["next_attempt_at"]) == (row.started_at, row.next_attempt_at)
    assert (got["duration_ms"], got["response_status"], got["attempt"]) == (0.125, 502, 1)
    summary = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", uuid.UUID(delivery))
    assert summary is not None
    assert (summary["event_id"], summary["status"], summary["last_status"]) == (
        row.event_id,
        "failed",
        502,
    )
    assert (summary["first_at"], summary["next_attempt_at"]) == (t0, row.next_attempt_at)


class _FlakyPool:
    """The real pool, except that the first `failures` acquisitions fail like an outage."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self._pool = pool
        self.failures = failures

    def acquire(self) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("database is down")
        return self._pool.acquire()


async def test_an_outage_is_retried_with_the_rows_intact(pool: asyncpg.Pool) -> None:
    flaky = _FlakyPool(pool, failures=2)
    dlog = DeliveryLog(flaky, flush_interval=0.01)  # type: ignore[arg-type]
    async with running(dlog, dlog.close):
        delivery, webhook = str(uuid.uuid4()), str(uuid.uuid4())
        fut = dlog.append(
            _row(delivery, webhook, 1, "failed", datetime.now(UTC), response_body="kept")
        )
        await asyncio.wait_for(fut, 10)
    assert flaky.failures == 0
    row = await pool.fetchrow(
        "SELECT * FROM delivery_attempts WHERE delivery_id = $1", uuid.UUID(delivery)
    )
    assert row["response_body"] == "kept" and row["request_headers"] is not None


async def _true_counts(pool: asyncpg.Pool, webhook: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM deliveries WHERE webhook_id = $1 GROUP BY status",
        uuid.UUID(webhook),
    )
    return {r["status"]: r["n"] for r in rows}


async def test_kept_counts_follow_every_change_of_the_summary(pool: asyncpg.Pool) -> None:
    """Two writers racing over the same deliveries, a count folder folding beside them,
    then updates and deletes: the kept counts equal a count of the summary table each
    time (what `stats` used to compute by scanning a webhook's deliveries)."""
    webhook = str(uuid.uuid4())
    deliveries = [str(uuid.uuid4()) for _ in range(60)]
    t0 = datetime.now(UTC)
    stop = asyncio.Event()
    writers = [DeliveryLog(pool, flush_interval=0.002, batch_size=7) for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        for w in writers:
            await stack.enter_async_context(running(w, w.close))
        folder = asyncio.create_task(counts.fold_forever(pool, stop, interval_s=0.005))
        stack.push_async_callback(lambda: folder)
        stack.callback(stop.set)
        for attempt, outcomes in enumerate(
            (["failed"] * 3, ["succeeded", "failed", "dead"], ["dead", "succeeded", "failed"]),
            start=1,
        ):
            at = t0 + timedelta(seconds=attempt)
            appended = [
                writers[i % 2].append(_row(d, webhook, attempt, outcomes[i % 3], at))
                for i, d in enumerate(deliveries)
            ]
            await asyncio.wait_for(asyncio.gather(*appended), 10)
            assert await counts.counts(pool, uuid.UUID(webhook)) == await _true_counts(
                pool, webhook
            )
    # A failed attempt with no retry after a dead one keeps the delivery dead.
    assert await counts.counts(pool, uuid.UUID(webhook)) == {"dead": 40, "succeeded": 20}
    # A redelivery marks some pending; retention deletes others; both before and after a fold.
    await pool.execute(
        "UPDATE deliveries SET status = 'pending' WHERE id = ANY($1::uuid[])", deliveries[:5]
    )
    await pool.execute("DELETE FROM deliveries WHERE id = ANY($1::uuid[])", deliveries[5:12])
    expected = await _true_counts(pool, webhook)
    assert expected["pending"] == 5 and sum(expected.values()) == 53
    assert await counts.counts(pool, uuid.UUID(webhook)) == expected
    assert await counts.fold(pool)
    assert await pool.fetchval("SELECT count(*) FROM delivery_count_deltas") == 0
    assert await counts.counts(pool, uuid.UUID(webhook)) == expected
    # Every delivery gone: the totals fold to nothing and their rows go.
    await pool.execute("DELETE FROM deliveries WHERE webhook_id = $1", uuid.UUID(webhook))
    await counts.fold(pool)
    assert await counts.counts(pool, uuid.UUID(webhook)) == {}
    assert not await pool.fetchval(
        "SELECT count(*) FROM delivery_counts WHERE webhook_id = $1", uuid.UUID(webhook)
    )
