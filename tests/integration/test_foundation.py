"""The ground the services stand on: migrations and a Kafka round trip, for real."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.config import Settings
from shared.db import connect, migrate, migration_files
from shared.kafka import (
    DELIVERIES,
    EVENTS,
    STREAM_WINDOW_S,
    WEBHOOKS,
    AdaptiveFetchConsumer,
    TopicSpec,
    ensure_topics,
    make_consumer,
    make_producer,
    poll,
    topic_specs,
)


async def test_migrations_apply_once_and_twice_is_harmless(provisioned: Settings) -> None:
    name = "hookline_mig_" + uuid.uuid4().hex[:8]
    admin = await connect(provisioned.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = provisioned.database_url.rsplit("/", 1)[0] + "/" + name
        conn = await connect(dsn)
        try:
            first = await migrate(conn)
            second = await migrate(conn)
            assert first == [v for v, _ in migration_files()]
            assert second == []
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
            assert {"outbox", "webhooks", "tokens", "events", "deliveries"} <= tables
            partitioned = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'delivery_attempts'::regclass"
            )
            assert partitioned >= 9  # default + yesterday..a week ahead
            recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
            assert recorded == len(migration_files())
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_delivery_log_is_append_only_by_partition(pool: asyncpg.Pool) -> None:
    # A row lands in its day's partition, not the default one.
    delivery = uuid.uuid4()
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at) VALUES ($1, $2, 'o', 'e', 'push', 1, 'auto',"
        " 'succeeded', now())",
        delivery,
        uuid.uuid4(),
    )
    where = await pool.fetchval(
        "SELECT tableoid::regclass::text FROM delivery_attempts WHERE delivery_id = $1", delivery
    )
    assert where.startswith("delivery_attempts_2")


async def test_topics_exist_with_their_partitions(provisioned: Settings) -> None:
    assert await ensure_topics(provisioned.kafka_bootstrap, topic_specs()) == []  # idempotent
    admin = AIOKafkaAdminClient(bootstrap_servers=provisioned.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([EVENTS, DELIVERIES, WEBHOOKS])
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        assert partitions[EVENTS] == 12 and partitions[DELIVERIES] == 12
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, WEBHOOKS)])
        entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_idempotent_produce_and_manual_commit_round_trip(provisioned: Settings) -> None:
    topic = "test.roundtrip." + uuid.uuid4().hex[:8]
    group = "test-group-" + uuid.uuid4().hex[:8]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(topic, 3, {})])
    producer = make_producer(provisioned.kafka_bootstrap, client_id="test")
    await producer.start()
    try:
        # Idempotence (acks=all, no duplicates on retry): the broker handed out a producer id.
        assert producer._txn_manager is not None and producer._txn_manager.producer_id >= 0
        for i in range(30):
            await producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    async def consume(n: int) -> list[bytes]:
        consumer = make_consumer(provisioned.kafka_bootstrap, topic, group_id=group, client_id="t")
        await consumer.start()
        got: list[bytes] = []
        try:
            while len(got) < n:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
                for tp, msgs in batch.items():
                    got.extend(m.value for m in msgs)  # type: ignore[misc]
                    await consumer.commit({tp: msgs[-1].offset + 1})
            committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
            assert sum(c or 0 for c in committed) == 30
        finally:
            await consumer.stop()
        return got

    got = await consume(30)
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(30))
    # Everything was committed: a new consumer in the same group gets nothing more.
    consumer = make_consumer(provisioned.kafka_bootstrap, topic, group_id=group, client_id="t2")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=2000)
        assert sum(len(v) for v in batch.values()) == 0
    finally:
        await consumer.stop()


async def test_an_adaptive_consumer_long_polls_when_idle_yet_gets_a_new_record_at_once(
    provisioned: Settings,
) -> None:
    """Idle, its fetch waits long for one byte (sparing the broker); a record still
    answers that fetch at once; while records flow, fetches wait briefly for a batch; once
    they stop, it long-polls again."""
    topic = "test.adaptive." + uuid.uuid4().hex[:8]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(topic, 2, {})])
    idle_ms = 60_000  # far longer than the waits below: a record that waited for it is late
    consumer = make_consumer(
        provisioned.kafka_bootstrap,
        topic,
        group_id="g-" + uuid.uuid4().hex[:8],
        client_id="adaptive",
        fetch_max_wait_ms=idle_ms,
        busy_fetch_wait_ms=10,
        busy_min_bytes=64 * 1024,
    )
    assert isinstance(consumer, AdaptiveFetchConsumer)
    producer = make_producer(provisioned.kafka_bootstrap, client_id="adaptive-p")
    await producer.start()
    await consumer.start()
    try:
        fetcher = consumer._fetcher
        assert await consumer.getmany(timeout_ms=2000) == {}  # assigned, nothing there
        assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (idle_ms, 1)
        # The long poll in flight names every partition: a record ends it.
        await producer.send_and_wait(topic, b"one", partition=0)
        got = await consumer.getmany(timeout_ms=10_000)
        assert [r.value for rs in got.values() for r in rs] == [b"one"]
        # Records flowing (one taken of many): the next fetches wait briefly for a batch.
        for i in range(50):
            await producer.send(topic, f"r{i}".encode(), partition=1)
        await producer.flush()
        first = await consumer.getmany(timeout_ms=10_000, max_records=1)
        assert sum(len(rs) for rs in first.values()) == 1
        await asyncio.sleep(0.1)  # the fetcher builds its next request
        assert fetcher._records
        assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (10, 64 * 1024)
        rest: list[bytes] = []
        while len(rest) < 49:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "a buffered record was not handed out"
            rest += [r.value for rs in batch.values() for r in rs]
        await asyncio.sleep(STREAM_WINDOW_S + 0.5)  # nothing more came: idle again
        assert not fetcher._records
        assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (idle_ms, 1)
    finally:
        await consumer.stop()
        await producer.stop()


async def test_poll_waits_long_for_a_record_yet_returns_at_once_on_stop(
    provisioned: Settings,
) -> None:
    """A consumer loop at rest waits in one long poll: a record arriving ends it at once,
    and so does `stop`; the poll given up on loses no record."""
    topic = "test.poll." + uuid.uuid4().hex[:8]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(topic, 2, {})])
    consumer = make_consumer(
        provisioned.kafka_bootstrap, topic, group_id="g-" + uuid.uuid4().hex[:8], client_id="poll"
    )
    producer = make_producer(provisioned.kafka_bootstrap, client_id="poll-p")
    await producer.start()
    await consumer.start()
    loop = asyncio.get_running_loop()
    try:
        stop = asyncio.Event()
        assert await poll(consumer, stop, max_records=10, wait_s=1.0) == {}  # assigned by now
        waiting = asyncio.create_task(poll(consumer, stop, max_records=10, wait_s=60.0))
        await asyncio.sleep(0.3)
        await producer.send_and_wait(topic, b"one", partition=0)
        started = loop.time()
        got = await asyncio.wait_for(waiting, 10.0)
        assert [r.value for rs in got.values() for r in rs] == [b"one"]
        assert loop.time() - started < 5.0, "the record waited for the poll's full length"

        waiting = asyncio.create_task(poll(consumer, stop, max_records=10, wait_s=60.0))
        await asyncio.sleep(0.3)
        started = loop.time()
        stop.set()
        assert await asyncio.wait_for(waiting, 5.0) == {}
        assert loop.time() - started < 1.0
        # The record sent after the abandoned poll is there for the next one.
        await producer.send_and_wait(topic, b"two", partition=1)
        later: list[bytes] = []
        deadline = loop.time() + 10.0
        while not later and loop.time() < deadline:
            batch = await poll(consumer, asyncio.Event(), max_records=10, wait_s=1.0)
            later += [r.value for rs in batch.values() for r in rs]
        assert later == [b"two"]
    finally:
        await consumer.stop()
        await producer.stop()
