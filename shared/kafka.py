"""Kafka adapter: producer and consumer factories, producing until acknowledged (its
errors translated into the error tree), topic provisioning."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from shared.core.errors import ProduceFailed
from shared.core.retry import RETRY_TIERS
from shared.runtime import Backoff

log = structlog.get_logger(component="kafka")

EVENTS = "hookline.events"
EVENTS_REJECTED = "hookline.events.rejected"
DELIVERIES = "hookline.deliveries"
DLQ = "hookline.dlq"
WEBHOOKS = "hookline.webhooks"
# Consumer groups: the matcher's, the senders', and the senders' delay tiers'.
MATCHER_GROUP = "hookline-matcher"
SENDER_GROUP = "hookline-sender"
RETRY_GROUP = "hookline-sender-retry"
WEEK_MS = 7 * 86400 * 1000
TIER_PARTITIONS = 4
# The header that says why a message went to hookline.events.rejected or hookline.dlq.
REJECT_HEADER = "reason"
# The largest record Hookline produces (broker message.max.bytes and every topic's
# max.message.bytes allow it): a 1 MiB ingested payload plus its delivery envelope fits.
# A record over the limit poisons an idempotent producer's partition, so producers check
# sizes against this before sending.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication: int = 1


def durability(replication: int) -> dict[str, str]:
    """With replicas, an acks=all write needs two of them: one broker may go, none is lost."""
    return {"min.insync.replicas": "2"} if replication > 1 else {}


def topic_specs(partitions: int = 12, replication: int = 1) -> list[TopicSpec]:
    """Every topic Hookline uses, with its partition count, replication and config."""
    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES + 64 * 1024), **durability(replication)}
    keep = {"retention.ms": str(WEEK_MS), **size}
    month = {"retention.ms": str(4 * WEEK_MS), **size}
    specs = [
        TopicSpec(EVENTS, partitions, keep),
        TopicSpec(DELIVERIES, partitions, keep),
        TopicSpec(DLQ, 3, month),
        TopicSpec(EVENTS_REJECTED, 3, month),
        TopicSpec(WEBHOOKS, 6, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", **size}),
    ]
    # One topic per fixed backoff; a partition holds a single delay, so its head is always
    # the next message due.
    # Delay tiers carry little traffic: fewer partitions keep their idle polling cheap.
    specs += [TopicSpec(t.topic, TIER_PARTITIONS, keep) for t in RETRY_TIERS]
    return [dataclasses.replace(s, replication=replication) for s in specs]


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as Java clients do), memoised:
    its murmur2 is pure Python, and the same few keys (webhook ids, org/repo) recur."""

    def __init__(self, limit: int = 100_000) -> None:
        self._inner = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}
        self._limit = limit

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._inner(key, all_partitions, available))
        slot = (key, len(all_partitions))
        partition = self._cache.get(slot)
        if partition is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            partition = self._cache[slot] = int(self._inner(key, all_partitions, available))
        return partition


def make_producer(bootstrap: str, *, client_id: str, linger_ms: int = 1) -> AIOKafkaProducer:
    """Idempotent producer (acks=all), batching for throughput."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        partitioner=CachedPartitioner(),
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=MAX_MESSAGE_BYTES + 64 * 1024,
        request_timeout_ms=30_000,
    )


def make_consumer(
    bootstrap: str,
    *topics: str,
    group_id: str | None,
    client_id: str,
    busy_fetch_wait_ms: int | None = None,
    busy_min_bytes: int = 1,
    **kw: object,
) -> AIOKafkaConsumer:
    """Consumer with manual commits; starts at the earliest offset of a new group.

    With `busy_fetch_wait_ms`, the consumer long-polls (`fetch_max_wait_ms`) while idle and
    batches its fetches while records flow (see `AdaptiveFetchConsumer`).
    """
    options: dict[str, object] = {
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_wait_ms": 50,
        **kw,
    }
    common = dict(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        # Members learn of a rebalance at their next heartbeat. Every 3 s (the clients'
        # default) rather than every 1 s: at rest the groups' heartbeats were a third of
        # the requests the broker answered.
        heartbeat_interval_ms=3_000,
        max_poll_interval_ms=300_000,
        # The fetch routine's wake-up when nothing else woke it (aiokafka's default 200 ms).
        # A fetch's answer, a consumed buffer, a seek, a resume or a new assignment wake it
        # at once anyway, so at rest this only spends wake-ups: five a second per consumer.
        consumer_timeout_ms=CONSUMER_WAKE_MS,
    )
    if busy_fetch_wait_ms is None:
        return AIOKafkaConsumer(*topics, **common, **options)  # type: ignore[arg-type]
    return AdaptiveFetchConsumer(
        *topics,
        busy_fetch_wait_ms=busy_fetch_wait_ms,
        busy_min_bytes=busy_min_bytes,
        **common,
        **options,
    )


class AdaptiveFetchConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """A consumer whose fetches wait long while it is idle, and batch while records flow.

    aiokafka sends one fetch per broker at a time and leaves out of it the partitions
    whose records are still buffered. Two modes, chosen as each fetch request is built:

    - idle (no record fetched for `STREAM_WINDOW_S`, none buffered, none paused): the
      fetch names every partition and waits up to `fetch_max_wait_ms` for one byte. The
      broker answers as soon as any partition has a record, so the long wait costs no
      latency and spares the client and the broker idle re-polls.
    - streaming: the fetch waits at most `busy_fetch_wait_ms` for `busy_min_bytes`. With
      one byte enough, a busy consumer fetched a handful of records per request, thousands
      of requests a second, each a syscall on both ends and a request the broker handles
      (a quarter of a saturated sender's CPU went to writing fetch requests). A short wait
      for a batch bounds both what a record waits and how often the consumer asks.

    The hook is the fetcher's `_get_actions_per_node` (aiokafka 0.14, pinned in
    pyproject.toml; a test checks what it puts into requests).
    """

    def __init__(
        self, *topics: str, busy_fetch_wait_ms: int, busy_min_bytes: int, **kw: object
    ) -> None:
        super().__init__(*topics, **kw)
        self._busy_fetch_wait_ms = busy_fetch_wait_ms
        self._busy_min_bytes = busy_min_bytes
        self._data_at = float("-inf")  # when a fetched record was last seen buffered

    async def start(self) -> None:
        await super().start()
        fetcher = self._fetcher
        idle_ms = fetcher._fetch_max_wait_ms
        plan = fetcher._get_actions_per_node

        def actions(assignment: object) -> object:
            now = time.monotonic()
            if fetcher._records:
                self._data_at = now
            # A paused partition is left out of fetches too, and once resumed it would wait
            # for the one in flight: a long poll must not be out meanwhile.
            if now - self._data_at < STREAM_WINDOW_S or self.paused():
                fetcher._fetch_max_wait_ms = self._busy_fetch_wait_ms
                fetcher._fetch_min_bytes = self._busy_min_bytes
            else:
                fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = idle_ms, 1
            return plan(assignment)

        fetcher._get_actions_per_node = actions


# The consumers on the delivery path (matcher, sender) while records flow: a fetch waits
# at most this long for HOT_PATH_MIN_BYTES (about 40 deliveries) before it is answered.
HOT_PATH_FETCH_WAIT_MS = 5
HOT_PATH_MIN_BYTES = 64 * 1024
# Records flowed this recently: the consumer is streaming.
STREAM_WINDOW_S = 0.5
# The same consumers while idle: a fetch names every partition and returns as soon as
# one has a record, so only the idle re-polls get rarer.
HOT_PATH_IDLE_FETCH_WAIT_MS = 1000
# The delay tiers while a partition is paused until its head is due: once resumed, it is
# fetched again after the fetch in flight, so this bounds that lateness.
TIER_PAUSED_FETCH_WAIT_MS = 500
# The delay tiers with nothing paused: a fetch names every partition, so a new record
# answers it at once.
TIER_IDLE_FETCH_WAIT_MS = 5000
# The webhook table's follower, alone on its client: a new record answers it at once.
TABLE_FETCH_WAIT_MS = 5000
# aiokafka's background fetch routine wakes at least this often (see make_consumer).
CONSUMER_WAKE_MS = 1000
# A consumer loop with nothing fetched waits this long per poll (see `poll`).
IDLE_POLL_S = 1.0


def make_hot_path_consumer(
    bootstrap: str, *, group_id: str, client_id: str, **kw: object
) -> AIOKafkaConsumer:
    """A consumer on the delivery path (matcher, sender): it long-polls while idle and
    batches its fetches while records flow."""
    return make_consumer(
        bootstrap,
        group_id=group_id,
        client_id=client_id,
        fetch_max_wait_ms=HOT_PATH_IDLE_FETCH_WAIT_MS,
        busy_fetch_wait_ms=HOT_PATH_FETCH_WAIT_MS,
        busy_min_bytes=HOT_PATH_MIN_BYTES,
        **kw,
    )


async def poll(
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
    *,
    max_records: int,
    wait_s: float = IDLE_POLL_S,
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """`consumer.getmany` for a loop that runs until `stop`: what is buffered at once, else
    waits up to `wait_s` for a fetch, returning early (empty) once `stop` is set.

    A loop that polled with a short timeout to notice `stop` woke several times a second at
    rest; this one wakes when a record arrives or it is told to stop. getmany drains the
    buffer without awaiting, so cancelling the wait loses no record.
    """
    batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    batch = await consumer.getmany(timeout_ms=0, max_records=max_records)
    if batch or stop.is_set():
        return batch
    fetch = asyncio.ensure_future(
        consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=max_records)
    )
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((fetch, stopped), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        fetch.cancel()
        raise
    finally:
        stopped.cancel()
    if not fetch.done():
        fetch.cancel()
        await asyncio.wait((fetch,))  # it may have finished meanwhile
    return {} if fetch.cancelled() else fetch.result()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, fresh from the cluster.

    `consumer.topics()` fetches metadata into a throwaway object and a consumer tracks only
    the topics it subscribed to, so ask its client directly.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def wait_for_kafka(bootstrap: str, timeout: float = 90.0) -> None:
    """Returns once a client can fetch the cluster's metadata."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaConnectionError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Creates the topics that do not exist yet and sets the config of those that do;
    returns the names created. Idempotent."""
    specs = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        present = [s for s in specs if s.name in existing and s.config]
        if present:
            # Non-incremental: the spec is the topic's whole desired config.
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, s.config) for s in present]
            )
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                        for s in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another process created them first
            # A broker may serve metadata without a just-created topic for a moment: wait
            # until it lists them, so that a consumer started next finds its partitions.
            wanted = {s.name for s in missing}
            for _ in range(100):
                if wanted <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
        return [s.name for s in missing]
    finally:
        await admin.close()


async def send_until_acked(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    stop: asyncio.Event,
) -> None:
    """Produces one record and waits until the broker acknowledged it, retrying with
    backoff while the process runs. Raises `ProduceFailed` once `stop` is set, or at once
    for an error aiokafka says no retry fixes (`retryable` is its `retriable`)."""
    backoff = Backoff(stop)
    while True:
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            return
        except KafkaError as exc:
            if stop.is_set() or not exc.retriable:
                raise ProduceFailed(f"{topic}: {exc!r}", retryable=exc.retriable) from exc
            log.warning("produce failed; retrying", topic=topic, error=repr(exc))
            await backoff.sleep()
