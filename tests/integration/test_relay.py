"""The outbox relay against real PostgreSQL and Kafka: nothing lost, nothing doubled.

Other tests (and other relays) may publish to the same topics at the same time, so every
assertion filters by this test's own org or topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.relay.relay import Relay, RelayConfig
from shared.config import Settings
from shared.kafka import (
    EVENTS,
    MAX_MESSAGE_BYTES,
    TopicSpec,
    ensure_topics,
    make_producer,
)
from shared.outbox import enqueue, enqueue_event
from tests.infra import ROOT
from tests.integration.clients import started
from tests.integration.kafka_support import DEADLINE_S, Tail

# Its own database: a relay publishes every unpublished outbox row, only this module's.
pytestmark = pytest.mark.own_database


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 30)


@pytest.fixture
async def producer(provisioned: Settings) -> AsyncIterator[AIOKafkaProducer]:
    async with started(make_producer(provisioned.kafka_bootstrap, client_id="test-relay")) as p:
        yield p


@pytest.fixture
async def tail(provisioned: Settings) -> AsyncIterator[Tail]:
    """The events topic, read from its end as the test starts."""
    async with started(Tail(provisioned.kafka_bootstrap, EVENTS)) as t:
        yield t


@pytest.fixture
async def own_tail(provisioned: Settings) -> AsyncIterator[Tail]:
    """A topic of the test's own (one partition), read from its start."""
    topic = "test.relay." + uuid.uuid4().hex[:8]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(topic, 1, {})])
    async with started(Tail(provisioned.kafka_bootstrap, topic)) as t:
        yield t


async def insert_events(pool: asyncpg.Pool, org: str, n: int) -> list[str]:
    ids = [f"{org}-{i}" for i in range(n)]
    async with pool.acquire() as conn, conn.transaction():
        for i, event_id in enumerate(ids):
            await enqueue_event(
                conn, org=org, repo="r", event="push", payload={"i": i}, event_id=event_id
            )
    return ids


async def wait_published(pool: asyncpg.Pool, org: str) -> None:
    """Polls until none of this org's outbox rows is left unpublished."""
    key = f"{org}/r".encode()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND published_at IS NULL", key
    ):
        assert loop.time() < deadline, "outbox rows still unpublished"
        await asyncio.sleep(0.05)


def event_ids(messages: list[Any], org: str) -> list[str]:
    key = f"{org}/r".encode()
    return [orjson.loads(m.value)["id"] for m in messages if m.key == key]


async def test_enqueued_events_reach_the_events_topic(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, provisioned: Settings, org: str, tail: Tail
) -> None:
    ids = await insert_events(pool, org, 20)
    async with running(Relay(pool, producer, dsn=provisioned.database_url)):
        await tail.until(lambda ms: len(event_ids(ms, org)) >= 20)
    mine = [m for m in tail.messages if m.key == f"{org}/r".encode()]
    # One key, so one partition, in id order.
    assert [orjson.loads(m.value)["id"] for m in mine] == ids
    assert orjson.loads(mine[0].value)["type"] == "push"
    assert len({m.partition for m in mine}) == 1
    await wait_published(pool, org)


async def test_headers_and_tombstones_are_published_as_written(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, provisioned: Settings, own_tail: Tail
) -> None:
    topic = own_tail.topic
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, topic=topic, key="k1", value=b"v1", headers={"trace": "abc"})
        await enqueue(conn, topic=topic, key="k1", value=None)
    async with running(Relay(pool, producer, dsn=provisioned.database_url)):
        await own_tail.until(lambda ms: len(ms) >= 2)
    first, second = own_tail.messages
    assert (first.key, first.value, list(first.headers)) == (b"k1", b"v1", [("trace", b"abc")])
    assert (second.key, second.value) == (b"k1", None)


async def test_two_relays_publish_each_row_exactly_once(
    pool: asyncpg.Pool, provisioned: Settings, org: str
) -> None:
    tail = await Tail(provisioned.kafka_bootstrap, EVENTS).start()
    producers = [make_producer(provisioned.kafka_bootstrap, client_id=f"r{i}") for i in (1, 2)]
    for p in producers:
        await p.start()
    try:
        config = RelayConfig(batch_size=100)
        relays = [Relay(pool, p, dsn=provisioned.database_url, config=config) for p in producers]
        async with running(relays[0]), running(relays[1]):
            ids = await insert_events(pool, org, 1000)
            await wait_published(pool, org)
        await tail.drain()  # everything published so far, duplicates included
        got = event_ids(tail.messages, org)
        assert sorted(got) == sorted(ids)  # each row exactly once
        assert all(r.published > 0 for r in relays), [r.published for r in relays]
    finally:
        for p in producers:
            await p.stop()
        await tail.stop()


class StallingProducer:
    """Sends the first `after` messages for real, then never gets another ack: a relay
    that dies between publishing and marking."""

    def __init__(self, real: AIOKafkaProducer, after: int) -> None:
        self._real = real
        self._after = after
        self.sent = 0
        self.stalled = asyncio.Event()

    async def send(self, *args: Any, **kw: Any) -> Awaitable[Any]:
        self.sent += 1
        if self.sent > self._after:
            self.stalled.set()
            return asyncio.get_running_loop().create_future()  # never resolved
        return await self._real.send(*args, **kw)


async def test_relay_killed_mid_batch_loses_nothing(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, provisioned: Settings, org: str, tail: Tail
) -> None:
    ids = await insert_events(pool, org, 300)
    stalling = StallingProducer(producer, after=120)
    crashed = Relay(pool, stalling, config=RelayConfig(batch_size=50))  # type: ignore[arg-type]
    task = asyncio.create_task(crashed.run(asyncio.Event()))
    await asyncio.wait_for(stalling.stalled.wait(), DEADLINE_S)
    task.cancel()  # mid-batch: 20 rows of the third batch sent, none of it marked
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert crashed.published <= 120  # the stalled batch was rolled back, not marked
    # A fresh relay takes over: every row reaches Kafka at least once.
    async with running(Relay(pool, producer, dsn=provisioned.database_url)):
        await wait_published(pool, org)
    await tail.drain()
    assert set(event_ids(tail.messages, org)) == set(ids)


async def test_prune_deletes_only_rows_published_over_an_hour_ago(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    topic = "test.prune." + uuid.uuid4().hex[:8]
    ids = {}
    for name, ago in (
        ("old", timedelta(hours=2)),
        ("older", timedelta(hours=3)),
        ("recent", timedelta(minutes=10)),
    ):
        ids[name] = await pool.fetchval(
            "INSERT INTO outbox (topic, key, value, published_at)"
            " VALUES ($1, $2, 'x', now() - $3::interval) RETURNING id",
            topic,
            name.encode(),
            ago,
        )
    try:
        pruned = await Relay(pool, producer, config=RelayConfig(prune_batch=1)).prune()
        assert pruned >= 2
        left = {r["id"] for r in await pool.fetch("SELECT id FROM outbox WHERE topic = $1", topic)}
        assert left == {ids["recent"]}
    finally:
        await pool.execute("DELETE FROM outbox WHERE topic = $1", topic)


async def test_relay_process_publishes_and_stops_on_sigterm(
    pool: asyncpg.Pool, provisioned: Settings, service_env: dict[str, str], org: str
) -> None:
    tail = await Tail(provisioned.kafka_bootstrap, EVENTS).start()
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, "-m", "services.relay"],
        cwd=ROOT,
        env={**os.environ, **service_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ids = await insert_events(pool, org, 50)
        await tail.until(lambda ms: set(event_ids(ms, org)) >= set(ids))
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert code == 0, stderr
        assert "relay stopped" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await tail.stop()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("k", b"x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),  # too large for Kafka
        (None, None, "a message needs a key or a value"),  # would stall the relay
    ],
    ids=["too-large", "without-key-or-value"],
)
async def test_a_row_kafka_cannot_take_is_set_aside_and_the_rest_flows(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    provisioned: Settings,
    own_tail: Tail,
    key: str | None,
    value: bytes | None,
    reason: str,
) -> None:
    topic = own_tail.topic
    try:
        async with pool.acquire() as conn, conn.transaction():
            refused = await enqueue(conn, topic=topic, key=key, value=value)
            await enqueue(conn, topic=topic, key="k", value=b"after")
        async with running(Relay(pool, producer, dsn=provisioned.database_url)):
            await own_tail.until(lambda ms: len(ms) >= 1)
        assert [m.value for m in own_tail.messages] == [b"after"]
        row = await pool.fetchrow(
            "SELECT published_at, refused_reason FROM outbox WHERE id = $1", refused
        )
        assert row["published_at"] is not None and reason in row["refused_reason"]
    finally:
        await pool.execute("DELETE FROM outbox WHERE topic = $1", topic)
