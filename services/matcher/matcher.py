"""The matcher: each event on `hookline.events` becomes one delivery message per webhook
subscribed to it (repo-level and org-level, filter matching, active), on
`hookline.deliveries` keyed by webhook id.

Subscriptions come from the in-memory `WebhookTable`, never from a query per message. A
batch's offsets are committed only after every message it produced was acknowledged, so a
crash re-matches the batch: delivery ids are `uuid5(event_id, webhook_id)`, so the
duplicates carry the same ids and are harmless downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from typing import TypeAlias

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from shared import metrics
from shared.config import Settings
from shared.core.errors import ProduceFailed
from shared.core.events import parse_timestamp
from shared.core.matching import matches
from shared.core.messages import (
    DeliveryMessage,
    EventMessage,
    MessageError,
    decode_event,
    delivery_id_for,
)
from shared.core.notices import about_webhook
from shared.kafka import (
    DELIVERIES,
    EVENTS,
    EVENTS_REJECTED,
    MATCHER_GROUP,
    MAX_MESSAGE_BYTES,
    REJECT_HEADER,
    CachedPartitioner,
    make_hot_path_consumer,
    make_producer,
    poll,
)
from shared.logging import configure_logging
from shared.runtime import run, sleep_or_stop
from shared.subscriptions import WebhookTable

log = structlog.get_logger(service="matcher")

GROUP_ID = MATCHER_GROUP
PING_REASON = "ping is sent per webhook via the API"
# A fan-out's messages produced before their acks are awaited (and their bytes let go).
FANOUT_CHUNK_BYTES = 16 * 1024 * 1024
# Offsets are committed at most this often while events flow. At a paced load the matcher
# polls many small batches (about 100 a second at 100 events/s), and an OffsetCommit after
# each was work for the broker's group coordinator on every one. A crash re-matches at
# most this much more (the ids are deterministic); a revoke or a stop commits at once.
COMMIT_INTERVAL_S = 0.1
Message: TypeAlias = "ConsumerRecord[bytes, bytes]"
_REJECT_HEADERS = {REJECT_HEADER, "source-topic", "source-partition", "source-offset"}
# The broker refuses a batch over `message.max.bytes` (default 1048588), and after such a
# refusal an idempotent producer's sequence for the partition is broken for good. So a
# message that would not fit is never sent: an event whose delivery would not fit is
# rejected instead, and a rejected copy that would not fit goes without its value.


def rejection_headers(msg: Message, reason: str) -> list[tuple[str, bytes]]:
    """Headers of a message copied to `hookline.events.rejected`: why, and where from."""
    return [
        *[(k, v) for k, v in (msg.headers or ()) if k not in _REJECT_HEADERS],
        (REJECT_HEADER, reason.encode()),
        ("source-topic", str(msg.topic).encode()),
        ("source-partition", str(msg.partition).encode()),
        ("source-offset", str(msg.offset).encode()),
    ]


def _epoch(created_at: str, fallback_ms: int) -> float:
    try:
        return parse_timestamp(created_at).timestamp()
    except (ValueError, OverflowError):
        return fallback_ms / 1000


def deliveries_for(
    event: EventMessage, table: WebhookTable, enqueued_at: float
) -> list[DeliveryMessage]:
    """One delivery message per active webhook of the event's repo or org whose filters
    select the event's type; a `webhook.*` notice never goes to the webhook it is about."""
    body: dict[str, object] | None = None
    out: list[DeliveryMessage] = []
    about = about_webhook(event.type, event.payload)
    for hook in table.subscribers(event.org, event.repo):
        if not matches(hook.events, event.type) or hook.id == about:
            continue
        if body is None:
            body = event.body()  # built once, shared by every delivery of this event
        out.append(
            DeliveryMessage(
                delivery_id=delivery_id_for(event.id, hook.id),
                webhook_id=hook.id,
                org=event.org,
                event_id=event.id,
                event_type=event.type,
                body=body,
                attempt=1,
                trigger="auto",
                enqueued_at=enqueued_at,
            )
        )
    return out


async def _settle(futures: list[Awaitable[object]]) -> None:
    """Waits for every send; ProduceFailed if any failed."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise ProduceFailed(f"{len(errors)} of {len(results)} sends failed: {errors[0]!r}")


class _Batches:
    """Delivery messages gathered into one record batch per partition, each handed to the
    producer whole (`send_batch`): one future per batch rather than one `send` (its
    metadata wait, partitioning, future and record metadata) per delivery, which was a
    fifth to a quarter of the matcher's CPU per delivery. Partitions are chosen as `send`
    chooses them (murmur2 of the key, over the topic's partitions in order). The
    idempotent producer numbers a submitted batch as any other when it drains it, so the
    sequence holds."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partitions: list[int],
        partitioner: CachedPartitioner,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._partitioner = partitioner
        self._open: dict[int, BatchBuilder] = {}
        self.futures: list[Awaitable[object]] = []

    async def add(self, key: bytes, value: bytes) -> None:
        partition = self._partitioner(key, self._partitions, self._partitions)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            await self._submit(partition, batch)
            batch = self._open[partition] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any

    async def flush(self) -> list[Awaitable[object]]:
        """Submits every open batch; returns (and forgets) the futures of all submitted."""
        open_batches, self._open = self._open, {}
        for partition, batch in open_batches.items():
            await self._submit(partition, batch)
        futures, self.futures = self.futures, []
        return futures

    async def _submit(self, partition: int, batch: BatchBuilder) -> None:
        batch.close()  # nothing `send` adds may join it
        self.futures.append(
            await self._producer.send_batch(batch, self._topic, partition=partition)
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the batch in hand finish and commit before its partitions are given away."""

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._matcher._batch_lock:
            await self._matcher.flush_commits()
            log.info("partitions revoked", partitions=len(list(revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=len(list(assigned)))


class Matcher:
    """Consumes events and produces deliveries; consumer, producer and table are started
    and stopped by the caller. Subscribe with `listener` before the first `getmany`."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        table: WebhookTable,
        *,
        max_records: int = 500,
        deliveries_topic: str = DELIVERIES,
        rejected_topic: str = EVENTS_REJECTED,
    ) -> None:
        self._consumer = consumer
        self._deliveries_topic = deliveries_topic
        self._rejected_topic = rejected_topic
        self._producer = producer
        self._table = table
        self._partitioner = CachedPartitioner()
        self._max_records = max_records
        self._batch_lock = asyncio.Lock()
        self.listener = _Rebalance(self)
        # Offsets whose output is acknowledged, committed in the background so the next
        # batch need not wait for the commit's round trip (it was half a batch's latency).
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._last_commit = float("-inf")
        self._hurry = asyncio.Event()  # a revoke or a stop is waiting for the commits
        self.matched = 0  # delivery messages produced (tests and metrics)
        self.rejected = 0

    def use_producer(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def handle(self, batch: Mapping[TopicPartition, list[Message]]) -> tuple[int, int]:
        """Produces every batch message's deliveries (or rejection) and awaits every ack.

        A large fan-out is produced FANOUT_CHUNK_BYTES at a time, each part acknowledged
        before the next is encoded: one event to thousands of webhooks never holds one
        copy of its body per webhook. Returns (deliveries, rejected). Raises ProduceFailed
        if any send failed."""
        partitions = sorted(await self._producer.partitions_for(self._deliveries_topic))
        out = _Batches(self._producer, self._deliveries_topic, partitions, self._partitioner)
        futures: list[Awaitable[object]] = []
        deliveries = rejected = pending = 0
        for messages in batch.values():
            for msg in messages:
                routed, reason = self._route(msg)
                if reason is not None:
                    rejected += 1
                    metrics.rejected_event()
                    futures.append(await self._reject(msg, reason))
                    continue
                fanned = 0
                for delivery, value in routed:
                    fanned += 1
                    await out.add(delivery.key, value)
                    pending += len(value)
                    if pending >= FANOUT_CHUNK_BYTES:
                        await _settle(futures + await out.flush())
                        futures, pending = [], 0
                deliveries += fanned
                metrics.fanout(fanned)
        await _settle(futures + await out.flush())
        return deliveries, rejected

    def _route(self, msg: Message) -> tuple[Iterator[tuple[DeliveryMessage, bytes]], str | None]:
        """The encoded deliveries of one event (made as they are taken), or the reason it
        is rejected. The body is encoded once for all of them."""
        try:
            event = decode_event(msg.value, timestamp_ms=msg.timestamp)
            if event.type == "ping":
                return iter(()), PING_REASON
            enqueued_at = _epoch(event.created_at, msg.timestamp)
            matched = deliveries_for(event, self._table, enqueued_at)
            if not matched:
                return iter(()), None
            body_json = orjson.dumps(matched[0].body)
            first = matched[0].encode_with(body_json)
        except MessageError as exc:
            return iter(()), exc.reason
        except Exception as exc:  # never let one message stop the stream
            log.exception("event could not be routed", offset=msg.offset)
            return iter(()), f"cannot route event: {type(exc).__name__}"
        # Every delivery of the event carries the same body: the first tells the size.
        if len(first) + len(matched[0].key) > MAX_MESSAGE_BYTES:
            return iter(()), f"delivery message of {len(first)} bytes exceeds {MAX_MESSAGE_BYTES}"
        return ((d, d.encode_with(body_json)) for d in matched), None

    async def _reject(self, msg: Message, reason: str) -> Awaitable[object]:
        value = msg.value
        if value is not None and len(value) + len(msg.key or b"") > MAX_MESSAGE_BYTES:
            reason = f"{reason}; value of {len(value)} bytes dropped"
            value = None
        fut: Awaitable[object] = await self._producer.send(
            self._rejected_topic, key=msg.key, value=value, headers=rejection_headers(msg, reason)
        )
        return fut

    def _commit(self, batch: Mapping[TopicPartition, list[Message]]) -> None:
        """Queues the batch's offsets (its output is acknowledged) for the committer."""
        for tp, msgs in batch.items():
            if msgs:
                self._uncommitted[tp] = msgs[-1].offset + 1
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_queued(paced=True))

    async def flush_commits(self) -> None:
        """Commits every queued offset now and waits until it is done (revoke, shutdown)."""
        self._hurry.set()
        try:
            while self._committing is not None and not self._committing.done():
                await self._committing
            if self._uncommitted:
                await self._commit_queued()
        finally:
            self._hurry.clear()

    async def _commit_queued(self, *, paced: bool = False) -> None:
        """Commits what is queued, then what was queued meanwhile; `paced`, no sooner than
        COMMIT_INTERVAL_S after the last commit (the offsets queued while it waits go in
        the same commit)."""
        loop = asyncio.get_running_loop()
        while self._uncommitted:
            wait = self._last_commit + COMMIT_INTERVAL_S - loop.time()
            if paced and wait > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._hurry.wait()
            offsets, self._uncommitted = self._uncommitted, {}
            self._last_commit = loop.time()
            await self._commit_offsets(offsets)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        kept = {tp: off for tp, off in offsets.items() if tp in assigned}
        if len(kept) < len(offsets):
            log.info(
                "offsets of revoked partitions not committed", partitions=len(offsets) - len(kept)
            )
        if not kept:
            return
        try:
            await self._consumer.commit(kept)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced under us: the new owner re-matches from its last commit.
            log.warning("offset commit failed after rebalance", error=str(exc))
        except KafkaError as exc:
            # Not committed: those events are matched again after a restart (same ids).
            log.warning("offset commit failed", error=repr(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Matches until `stop` is set; the batch in hand is finished and committed first.

        Raises ProduceFailed (without committing the batch) when the broker refuses it."""
        try:
            await self._match_until(stop)
        finally:
            if self._committing is not None:
                await asyncio.wait([self._committing])
            async with self._batch_lock:
                with contextlib.suppress(KafkaError):
                    await self.flush_commits()

    async def _match_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await poll(self._consumer, stop, max_records=self._max_records)
            if not batch:
                continue
            async with self._batch_lock:
                await self._table.catch_up()
                deliveries, rejected = await self.handle(batch)
                self._commit(batch)
            self.matched += deliveries
            self.rejected += rejected
            log.debug(
                "batch matched",
                events=sum(len(m) for m in batch.values()),
                deliveries=deliveries,
                rejected=rejected,
            )


async def serve(settings: Settings, stop: asyncio.Event, *, group_id: str = GROUP_ID) -> None:
    """The composition root: table, producer, consumer, matcher; closed in reverse order."""
    configure_logging(settings.log_level, service="matcher")
    name = settings.instance_name("matcher")
    table = WebhookTable(settings.kafka_bootstrap, client_id=f"{name}-webhooks")
    await table.start()  # complete before the first event is matched
    try:
        producer = make_producer(settings.kafka_bootstrap, client_id=name)
        await producer.start()
        try:
            consumer = make_hot_path_consumer(
                settings.kafka_bootstrap, group_id=group_id, client_id=name
            )
            matcher = Matcher(consumer, producer, table)
            consumer.subscribe([EVENTS], listener=matcher.listener)
            await consumer.start()
            try:
                log.info("matcher started", instance=name, webhooks=len(table))
                delay = 0.5
                while not stop.is_set():
                    try:
                        await matcher.run(stop)
                    except (ProduceFailed, KafkaError) as exc:
                        # The batch was not committed; the consumer's position is past it,
                        # so go back to the committed offsets and match it again.
                        log.error(
                            "batch not produced; retrying from the last commit", error=repr(exc)
                        )
                        if await sleep_or_stop(stop, delay):
                            break
                        delay = min(delay * 2, 30.0)
                        for tp in consumer.assignment():
                            committed = await consumer.committed(tp)
                            if committed is None:
                                await consumer.seek_to_beginning(tp)
                            else:
                                consumer.seek(tp, committed)
                        # A fresh producer: an idempotent one whose sequence broke stays broken.
                        await producer.stop()
                        producer = make_producer(settings.kafka_bootstrap, client_id=name)
                        await producer.start()
                        matcher.use_producer(producer)
                    else:
                        delay = 0.5
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
    finally:
        await table.stop()
    log.info("matcher stopped", instance=name)


def main() -> None:
    """`python -m services.matcher`."""
    run(serve)
