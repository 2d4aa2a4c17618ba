"""README promises about the transactional outbox and its relay, against real PostgreSQL
and Kafka: published if and only if the transaction commits, the plain-SQL producer, and
the wake-up on `NOTIFY hookline_outbox`, and a relay process killed with -9."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.relay.relay import Relay, RelayConfig
from shared.config import Settings
from shared.core.messages import decode_event
from shared.kafka import EVENTS, make_producer
from shared.outbox import CHANNEL, enqueue_event
from tests.infra import ROOT
from tests.integration.clients import started
from tests.integration.kafka_support import Tail
from tests.integration.test_relay import event_ids, insert_events, running

# Its own database: a relay publishes every unpublished outbox row, only this module's.
pytestmark = pytest.mark.own_database

# Far longer than any wait below: a row published in time was woken, not polled.
NO_POLL = RelayConfig(poll_interval_s=600.0)


class Boom(Exception):
    pass


@pytest.fixture
async def producer(provisioned: Settings) -> AsyncIterator[AIOKafkaProducer]:
    async with started(
        make_producer(provisioned.kafka_bootstrap, client_id="test-promises-outbox")
    ) as p:
        yield p


async def unpublished(pool: asyncpg.Pool, key: bytes) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1 AND published_at IS NULL", key
        )
    )


async def until_published(pool: asyncpg.Pool, key: bytes, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await unpublished(pool, key):
        assert loop.time() < deadline, "outbox rows still unpublished"
        await asyncio.sleep(0.05)


async def test_a_rolled_back_enqueue_event_publishes_nothing(
    pool: asyncpg.Pool, provisioned: Settings, producer: AIOKafkaProducer, org: str
) -> None:
    tail = await Tail(provisioned.kafka_bootstrap, EVENTS).start()
    try:
        with pytest.raises(Boom):
            async with pool.acquire() as conn, conn.transaction():
                await enqueue_event(
                    conn, org=org, repo="r", event="push", payload={}, event_id=f"{org}-rolled"
                )
                raise Boom  # the producer's own change failed: its transaction rolls back
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_event(
                conn, org=org, repo="r", event="push", payload={}, event_id=f"{org}-kept"
            )
        async with running(Relay(pool, producer, dsn=provisioned.database_url)):
            await until_published(pool, f"{org}/r".encode())
            # Same key, same partition: anything written before the kept row precedes it.
            await tail.until(lambda ms: f"{org}-kept" in event_ids(ms, org))
            await tail.drain()
    finally:
        await tail.stop()
    assert event_ids(tail.messages, org) == [f"{org}-kept"]
    assert not await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND value::text LIKE $2",
        f"{org}/r".encode(),
        f"%{org}-rolled%",
    )


async def test_the_readmes_plain_sql_insert_is_published_as_a_valid_event(
    pool: asyncpg.Pool, provisioned: Settings, producer: AIOKafkaProducer, org: str
) -> None:
    event_id = f"evt-{uuid.uuid4().hex}"
    tail = await Tail(provisioned.kafka_bootstrap, EVENTS).start()
    try:
        # The README's statement, word for word but for the org and the id.
        await pool.execute(
            "INSERT INTO outbox (topic, key, value)"
            " VALUES ('hookline.events', convert_to($1, 'UTF8'),"
            ' convert_to(\'{"id":"\' || $2 || \'","event":"push","org":"\' || $3 ||'
            ' \'","repo":"widgets", "payload":{"ref":"refs/heads/main"}}\', \'UTF8\'))',
            f"{org}/widgets",
            event_id,
            org,
        )
        async with running(Relay(pool, producer, dsn=provisioned.database_url)):
            await until_published(pool, f"{org}/widgets".encode())
            await tail.until(lambda ms: any(m.key == f"{org}/widgets".encode() for m in ms))
    finally:
        await tail.stop()
    (msg,) = [m for m in tail.messages if m.key == f"{org}/widgets".encode()]
    event = decode_event(msg.value, timestamp_ms=msg.timestamp)
    assert event.id == event_id and event.org == org and event.repo == "widgets"
    assert event.payload == {"ref": "refs/heads/main"}


async def test_the_relay_wakes_at_once_on_notify_not_only_on_its_poll(
    pool: asyncpg.Pool, provisioned: Settings, producer: AIOKafkaProducer, org: str
) -> None:
    key = f"{org}/r".encode()
    relay = Relay(pool, producer, dsn=provisioned.database_url, config=NO_POLL)
    async with running(relay):
        await asyncio.sleep(3)  # its first claim is done; it now waits for a poll or a NOTIFY
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_event(conn, org=org, repo="r", event="push", payload={})
        await asyncio.sleep(3)
        assert await unpublished(pool, key) == 1, "published without a wake-up: a poll?"
        await pool.execute(f"NOTIFY {CHANNEL}")
        await until_published(pool, key, timeout=60)  # the next poll is 10 minutes away


def start_relay(service_env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.relay"],
        cwd=ROOT,
        env={**os.environ, **service_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def marked_ids(pool: asyncpg.Pool, key: bytes) -> set[str]:
    rows = await pool.fetch(
        "SELECT convert_from(value, 'UTF8')::json->>'id' AS id FROM outbox"
        " WHERE key = $1 AND published_at IS NOT NULL",
        key,
    )
    return {r["id"] for r in rows}


async def test_a_relay_process_killed_between_publish_and_mark_loses_nothing(
    pool: asyncpg.Pool, provisioned: Settings, service_env: dict[str, str], org: str
) -> None:
    key = f"{org}/r".encode()
    tail = await Tail(provisioned.kafka_bootstrap, EVENTS).start()
    ids = await insert_events(pool, org, 5000)
    # A SHARE lock on the outbox lets the relay claim and publish (FOR UPDATE takes ROW
    # SHARE) but not mark (UPDATE needs ROW EXCLUSIVE): it is held between the two.
    blocker = await pool.acquire()
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE outbox IN SHARE MODE")
    relays = [start_relay(service_env)]
    try:
        caught: set[str] = set()
        for _ in range(600):
            await asyncio.sleep(0.1)
            await tail.drain()
            caught = set(event_ids(tail.messages, org))
            if caught:
                break
        assert caught, "the relay never published"
        await asyncio.sleep(0.5)
        assert not caught & await marked_ids(pool, key)  # published, none marked
        relays[0].kill()  # SIGKILL, between publish and mark
        await asyncio.to_thread(relays[0].wait, 30)
        await lock.rollback()
        await pool.release(blocker)
        blocker = None
        assert await unpublished(pool, key), "everything was marked already"
        relays.append(start_relay(service_env))
        await until_published(pool, key, timeout=120)
        await tail.drain()
    finally:
        if blocker is not None:
            await lock.rollback()
            await pool.release(blocker)
        for proc in relays:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await tail.stop()
    seen = Counter(event_ids(tail.messages, org))
    assert set(seen) == set(ids), "events lost"
    # What was published but not marked when the relay died is published again.
    assert all(seen[i] >= 2 for i in caught)
