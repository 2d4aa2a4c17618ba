"""The matcher against real Kafka: one delivery per subscribed webhook, deterministic ids,
bad messages set aside with a reason.

Most tests run a `Matcher` on private topics (so other tests' events cannot be counted);
the last runs the service's own `serve()` on the real topics, fed through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.matcher.matcher import COMMIT_INTERVAL_S, PING_REASON, Matcher, serve
from services.relay.relay import Relay
from shared.config import Settings
from shared.core.messages import DeliveryMessage, WebhookRecord, delivery_id_for
from shared.core.ssrf import Allowlist
from shared.crypto import SecretBox
from shared.kafka import (
    DELIVERIES,
    EVENTS,
    EVENTS_REJECTED,
    MAX_MESSAGE_BYTES,
    CachedPartitioner,
    TopicSpec,
    ensure_topics,
    make_consumer,
    make_producer,
    partitions_of,
)
from shared.outbox import enqueue_event
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore
from tests.integration.kafka_support import DEADLINE_S, read_to_end
from tests.records import webhook_record

# Its own database: a relay publishes every unpublished outbox row, only this module's.
pytestmark = pytest.mark.own_database


@dataclass
class Pipeline:
    """A matcher on private topics, with a producer to feed it."""

    events: str
    deliveries: str
    rejected: str
    table: WebhookTable
    matcher: Matcher
    consumer: AIOKafkaConsumer
    producer: AIOKafkaProducer
    bootstrap: str
    published: int = 0

    async def publish(self, value: bytes, key: bytes = b"k") -> None:
        await self.producer.send_and_wait(self.events, key=key, value=value)
        self.published += 1

    async def settled(self) -> None:
        """Waits until the matcher committed past every published event (so every message
        it produces for them was acknowledged)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        tps = await partitions_of(self.consumer, self.events)
        while True:
            done = 0
            for tp in tps:
                with contextlib.suppress(Exception):
                    done += await self.consumer.committed(tp) or 0
            if done >= self.published:
                return
            assert loop.time() < deadline, f"matcher committed {done} of {self.published}"
            await asyncio.sleep(0.05)

    async def deliveries_out(self) -> list[DeliveryMessage]:
        await self.settled()
        msgs = await read_to_end(self.bootstrap, self.deliveries, {})
        return [DeliveryMessage.decode(m.value) for m in msgs]

    async def rejected_out(self) -> list[Any]:
        await self.settled()
        return await read_to_end(self.bootstrap, self.rejected, {})


@pytest.fixture
async def pipeline(provisioned: Settings) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    names = [f"test.{kind}.{suffix}" for kind in ("events", "deliveries", "rejected")]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(n, 3, {}) for n in names])
    bootstrap = provisioned.kafka_bootstrap
    table = WebhookTable(bootstrap, client_id="unused")  # filled with put(), not started
    producer = make_producer(bootstrap, client_id="test-matcher")
    await producer.start()
    consumer = make_consumer(bootstrap, group_id=f"test-matcher-{suffix}", client_id="tm")
    matcher = Matcher(consumer, producer, table, deliveries_topic=names[1], rejected_topic=names[2])
    consumer.subscribe([names[0]], listener=matcher.listener)
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(matcher.run(stop))
    events, deliveries, rejected = names
    yield Pipeline(events, deliveries, rejected, table, matcher, consumer, producer, bootstrap)
    stop.set()
    await asyncio.wait_for(task, 30)
    await consumer.stop()
    await producer.stop()


def hook(
    org: str, repo: str | None, events: tuple[str, ...], *, active: bool = True
) -> WebhookRecord:
    return webhook_record(id=str(uuid.uuid4()), org=org, repo=repo, events=events, active=active)


def event(org: str, repo: str = "widgets", **over: object) -> bytes:
    obj: dict[str, object] = {
        "id": "evt-" + uuid.uuid4().hex,
        "event": "pull_request",
        "action": "opened",
        "org": org,
        "repo": repo,
        "payload": {"number": 1},
    }
    obj.update(over)
    return orjson.dumps(obj)


async def test_one_delivery_per_subscribed_webhook(pipeline: Pipeline, org: str) -> None:
    repo_hook = hook(org, "widgets", ("pull_request.opened",))
    org_hook = hook(org, None, ("*",))
    for record in (
        repo_hook,
        org_hook,
        hook(org, "widgets", ("push",)),  # filter does not match
        hook(org, "widgets", ("pull_request",), active=False),  # inactive
        hook(org, "gadgets", ("*",)),  # another repo
    ):
        pipeline.table.put(record)
    raw = event(org)
    event_id = orjson.loads(raw)["id"]
    await pipeline.publish(raw, key=f"{org}/widgets".encode())

    out = await pipeline.deliveries_out()
    assert len(out) == 2
    assert {d.delivery_id for d in out} == {
        delivery_id_for(event_id, repo_hook.id),
        delivery_id_for(event_id, org_hook.id),
    }
    for d in out:
        assert (d.event_id, d.event_type, d.org, d.attempt, d.trigger) == (
            event_id,
            "pull_request.opened",
            org,
            1,
            "auto",
        )
        assert d.body["event"] == "pull_request" and d.body["action"] == "opened"
        assert d.body["type"] == "pull_request.opened"  # the full dotted type too
        assert d.body["repository"]["full_name"] == f"{org}/widgets"
        assert d.enqueued_at is not None and d.enqueued_at > 0
    # Keyed by webhook id, so one webhook's deliveries share a partition.
    msgs = await read_to_end(pipeline.bootstrap, pipeline.deliveries, {})
    assert {m.key for m in msgs} == {repo_hook.id.encode(), org_hook.id.encode()}
    assert pipeline.matcher.matched == 2


async def test_deliveries_are_batched_onto_the_partitions_send_would_choose(
    pipeline: Pipeline, org: str
) -> None:
    """Many events to many webhooks, over several record batches per partition (bodies of
    30 KB against 512 KiB batches): every delivery lands once, on the partition the
    producer's own `send` picks for its key, in the order the events came for each
    webhook (the order a retry or a replay through `send` keeps too)."""
    hooks = [hook(org, "widgets", ("*",)) for _ in range(24)]
    for h in hooks:
        pipeline.table.put(h)
    events = [event(org, payload={"n": n, "pad": "x" * 30_000}) for n in range(40)]
    for raw in events:
        await pipeline.publish(raw, key=f"{org}/widgets".encode())
    await pipeline.settled()
    msgs = await read_to_end(pipeline.bootstrap, pipeline.deliveries, {})

    assert len(msgs) == len(hooks) * len(events)
    partitions = sorted(await pipeline.producer.partitions_for(pipeline.deliveries))
    by_send = CachedPartitioner()
    assert all(m.partition == by_send(m.key, partitions, partitions) for m in msgs)
    assert len({m.partition for m in msgs}) > 1
    ids = [orjson.loads(raw)["id"] for raw in events]
    for h in hooks:
        mine = [DeliveryMessage.decode(m.value) for m in msgs if m.key == h.id.encode()]
        assert [d.event_id for d in mine] == ids


async def test_offsets_are_committed_at_most_every_interval_while_events_trickle(
    pipeline: Pipeline, org: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events one at a time, each its own small batch: the matcher commits their offsets
    at most every COMMIT_INTERVAL_S (each commit covering the batches queued meanwhile),
    not once per batch, and the last offset is still committed."""
    pipeline.table.put(hook(org, "widgets", ("*",)))
    commits: list[float] = []
    real_commit = pipeline.consumer.commit

    async def commit(offsets: Any = None) -> None:
        commits.append(asyncio.get_running_loop().time())
        await real_commit(offsets)

    monkeypatch.setattr(pipeline.consumer, "commit", commit)
    for _ in range(40):
        await pipeline.publish(event(org), key=f"{org}/widgets".encode())
        await asyncio.sleep(0.01)
    out = await pipeline.deliveries_out()  # waits until every offset is committed

    assert len(out) == 40
    gaps = [b - a for a, b in itertools.pairwise(commits)]
    assert gaps and min(gaps) >= COMMIT_INTERVAL_S * 0.9, gaps
    span = commits[-1] - commits[0]
    assert len(commits) <= span / COMMIT_INTERVAL_S + 2, f"{len(commits)} in {span:.2f}s"


async def test_the_same_event_twice_gives_the_same_delivery_ids(
    pipeline: Pipeline, org: str
) -> None:
    hooks = [hook(org, "widgets", ("pull_request",)), hook(org, None, ("pull_request.*",))]
    for record in hooks:
        pipeline.table.put(record)
    raw = event(org)
    await pipeline.publish(raw)
    await pipeline.publish(raw)
    # No id at all: derived from the bytes, so still the same delivery ids twice.
    no_id = event(org, id=None)
    await pipeline.publish(no_id)
    await pipeline.publish(no_id)

    out = await pipeline.deliveries_out()
    assert len(out) == 8
    by_event: dict[str, list[str]] = {}
    for d in out:
        by_event.setdefault(d.event_id, []).append(d.delivery_id)
    assert len(by_event) == 2
    for event_id, got in by_event.items():
        assert sorted(got) == sorted(2 * [delivery_id_for(event_id, h.id) for h in hooks])


async def test_bad_messages_are_rejected_with_a_reason_and_the_next_flows(
    pipeline: Pipeline, org: str
) -> None:
    good = hook(org, "widgets", ("push",))
    pipeline.table.put(good)
    bad = [
        (b"not json at all", "not JSON"),
        (event(org, event="no_such_event", action=None), "event"),
        (event(org, event="ping", action=None), PING_REASON),
    ]
    for value, _ in bad:
        await pipeline.publish(value, key=b"same-key")
    valid = event(org, event="push", action=None)
    await pipeline.publish(valid, key=b"same-key")  # after the bad ones, same partition

    rejected = await pipeline.rejected_out()
    assert len(rejected) == 3
    by_value = {m.value: dict(m.headers) for m in rejected}
    for value, reason in bad:
        headers = by_value[value]
        assert reason in headers["reason"].decode()
        assert headers["source-topic"].decode() == pipeline.events
        assert int(headers["source-offset"].decode()) >= 0
        assert "source-partition" in headers
    out = await pipeline.deliveries_out()
    assert [d.delivery_id for d in out] == [delivery_id_for(orjson.loads(valid)["id"], good.id)]
    assert pipeline.matcher.rejected == 3


async def test_the_service_routes_outbox_events_and_rejects_pings(
    pool: asyncpg.Pool, provisioned: Settings, org: str
) -> None:
    """`serve()` as `python -m services.matcher` runs it, on the real topics."""
    bootstrap = provisioned.kafka_bootstrap
    producer = make_producer(bootstrap, client_id="test-serve")
    await producer.start()
    relay_stop, matcher_stop = asyncio.Event(), asyncio.Event()
    relay = asyncio.create_task(Relay(pool, producer, dsn=provisioned.database_url).run(relay_stop))
    group = "test-serve-" + uuid.uuid4().hex[:8]
    matcher: asyncio.Task[None] | None = None
    try:
        store = WebhookStore(
            pool,
            SecretBox(provisioned.secret_key),
            allow=Allowlist.parse("127.0.0.0/8"),
            max_per_repo=20,
        )
        created, _ = await store.create(
            org, "widgets", {"url": "http://127.0.0.1:9/h", "events": ["push"]}
        )
        # The new group starts at today's end of hookline.events, not at its history.
        starts = await commit_end_offsets(bootstrap, group)
        rejected_from = await end_offsets(bootstrap, EVENTS_REJECTED)
        deliveries_from = await end_offsets(bootstrap, DELIVERIES)
        await wait_published(pool, str(created.id))
        matcher = asyncio.create_task(serve(provisioned, matcher_stop, group_id=group))

        async with pool.acquire() as conn, conn.transaction():
            msg = await enqueue_event(conn, org=org, repo="widgets", event="push", payload={})
        ping = event(org, event="ping", action=None)
        await producer.send_and_wait(EVENTS, key=f"{org}/widgets".encode(), value=ping)

        want = delivery_id_for(msg.id, created.id)
        got: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not any(DeliveryMessage.decode(m.value).delivery_id == want for m in got):
            assert loop.time() < deadline and not matcher.done(), "no delivery from the service"
            await asyncio.sleep(0.2)
            got = await read_to_end(bootstrap, DELIVERIES, deliveries_from)
            got = [m for m in got if m.key == created.id.encode()]
        while True:
            rejected = [
                m
                for m in await read_to_end(bootstrap, EVENTS_REJECTED, rejected_from)
                if m.value == ping
            ]
            if rejected:
                break
            assert loop.time() < deadline, "the ping was not rejected"
            await asyncio.sleep(0.2)
        assert dict(rejected[0].headers)["reason"].decode() == PING_REASON
        assert starts  # the group had its offsets
    finally:
        matcher_stop.set()
        relay_stop.set()
        if matcher is not None:
            await asyncio.wait_for(matcher, 30)
        await asyncio.wait_for(relay, 30)
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = make_consumer(bootstrap, group_id=None, client_id="test-ends")
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(
            await partitions_of(consumer, topic)
        )
        return ends
    finally:
        await consumer.stop()


async def commit_end_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """Gives `group` committed offsets at the current end of hookline.events."""
    consumer = make_consumer(bootstrap, group_id=group, client_id="test-seed")
    await consumer.start()
    try:
        tps = await partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        await consumer.commit(ends)
        return ends
    finally:
        await consumer.stop()


async def wait_published(pool: asyncpg.Pool, webhook_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND published_at IS NULL", webhook_id.encode()
    ):
        assert loop.time() < deadline, "webhook record still unpublished"
        await asyncio.sleep(0.05)


async def test_an_event_whose_delivery_would_not_fit_is_rejected(
    pipeline: Pipeline, org: str
) -> None:
    good = hook(org, "widgets", ("push",))
    pipeline.table.put(good)
    raw = event(org, event="push", action=None, payload={"blob": ""})
    blob = "x" * (MAX_MESSAGE_BYTES - 100 - len(raw))  # the event fits; its delivery would not
    big = event(org, event="push", action=None, payload={"blob": blob})
    await pipeline.publish(big, key=b"same-key")
    small = event(org, event="push", action=None)
    await pipeline.publish(small, key=b"same-key")

    rejected = await pipeline.rejected_out()
    assert [m.value for m in rejected] == [big]
    assert "exceeds" in dict(rejected[0].headers)["reason"].decode()
    out = await pipeline.deliveries_out()
    assert [d.event_id for d in out] == [orjson.loads(small)["id"]]


async def test_a_fan_out_to_5000_org_hooks_is_produced_in_bounded_parts(
    pipeline: Pipeline, org: str
) -> None:
    """One event with a 20 KB body to 5,000 org-level webhooks: 100 MB of delivery
    messages, which the matcher never holds at once (tracemalloc's peak during it)."""
    import resource
    import tracemalloc

    hooks = [hook(org, None, ("*",)) for _ in range(5_000)]
    for h in hooks:
        pipeline.table.put(h)
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    try:
        await pipeline.publish(event(org, payload={"pad": "x" * 20_000}))
        await pipeline.settled()  # every delivery produced and acknowledged
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = await pipeline.deliveries_out()
    after_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"fan-out to 5,000: tracemalloc peak {peak / 2**20:.0f} MiB;"
        f" peak RSS of the test process {before_rss:.0f} -> {after_rss:.0f} MiB"
    )
    assert sorted(d.webhook_id for d in out) == sorted(h.id for h in hooks)
    assert all(len(d.body["pad"]) == 20_000 for d in out)
    # The messages total 100 MB; the matcher holds about one 16 MiB part of them at a time.
    assert peak / 2**20 < 48, f"held {peak / 2**20:.0f} MiB"
