"""Delay topics (DESIGN.md section 6): a retry waits in the largest fixed tier not longer
than its remaining delay, hops on, and is republished to `hookline.deliveries` once due.

A tier partition holds one fixed delay, so its head is always the next message to leave:
the consumer pauses a partition until its head is due instead of polling it. Pause state
is lost on a rebalance (aiokafka), so holds are rebuilt from the fetched heads after each
assignment. Republishing the due message (rather than attempting it here) keeps a single
attempt path, its concurrency caps and its offset watermark, for a few ms of latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from shared import metrics
from shared.core.messages import DeliveryMessage, MessageError
from shared.core.retry import RETRY_TIERS, RetryTier, tier_for
from shared.kafka import DELIVERIES, DLQ, IDLE_POLL_S, REJECT_HEADER, poll
from shared.kafka import RETRY_GROUP as RETRY_GROUP  # the group of every tier topic

log = structlog.get_logger(component="retry_tiers")

# The dead-letter header carrying why a message was rejected (the matcher uses the same
# name on hookline.events.rejected).
# The longest a tier consumer sleeps between looks at its heads: bounds the lateness.
_MAX_WAIT_S = 0.2


@dataclass(frozen=True)
class Topics:
    """The sender's topic names; tests use a private set so runs never see each other."""

    deliveries: str = DELIVERIES
    dlq: str = DLQ
    retry_prefix: str = "hookline.retry."

    def tier_topic(self, tier: RetryTier) -> str:
        return f"{self.retry_prefix}{tier.name}"

    def tier_of(self, topic: str) -> RetryTier | None:
        for tier in RETRY_TIERS:
            if self.tier_topic(tier) == topic:
                return tier
        return None

    def all_tiers(self) -> list[str]:
        return [self.tier_topic(t) for t in RETRY_TIERS]

    def all(self) -> list[str]:
        return [self.deliveries, self.dlq, *self.all_tiers()]


def release_at(
    record: ConsumerRecord[bytes, bytes], msg: DeliveryMessage, tier: RetryTier
) -> float:
    """When a message leaves its tier: after the tier's delay, or when due if sooner."""
    waited = record.timestamp / 1000 + tier.delay_s
    return waited if msg.due_at is None else min(waited, msg.due_at)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RetryTiers) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._owner.lock:  # never in the middle of a forward and its commit
            self._owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Fresh partition state: nothing held, nothing paused; a head that is not due
        # pauses its partition again as soon as it is fetched.
        async with self._owner.lock:
            self._owner.forget(assigned)


class RetryTiers:
    """Consumes every tier topic (group `hookline-sender-retry`) and moves due messages on."""

    def __init__(
        self,
        consumer: Callable[[], AIOKafkaConsumer],
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        *,
        topics: Topics,
    ) -> None:
        """`consumer` makes a fresh consumer of the tier topics' group (after an error the
        tiers restart with a new one)."""
        self._make_consumer = consumer
        self._producer = producer
        self._stop = stop
        self._topics = topics
        self.lock = asyncio.Lock()
        self.held: dict[TopicPartition, deque[ConsumerRecord[bytes, bytes]]] = {}
        self._paused: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.held.pop(tp, None)
            self._paused.discard(tp)

    async def run(self) -> None:
        """Consumes until `stop` is set; restarts its consumer after an unexpected error
        (retries must not silently stop while deliveries keep flowing)."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except Exception:
                log.exception("retry tier consumer failed; restarting")
                self.held.clear()
                self._paused.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stop.wait()

    async def _run_once(self) -> None:
        consumer = self._make_consumer()
        consumer.subscribe(self._topics.all_tiers(), listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        try:
            wait = _MAX_WAIT_S
            while not self._stop.is_set():
                batch = await poll(consumer, self._stop, max_records=2000, wait_s=wait)
                async with self.lock:
                    assigned = consumer.assignment()
                    for tp, records in batch.items():
                        if tp in assigned:
                            self.held.setdefault(tp, deque()).extend(records)
                    wait = await self._move_due(consumer)
        finally:
            self._consumer = None
            with contextlib.suppress(KafkaError):
                await consumer.stop()

    async def _move_due(self, consumer: AIOKafkaConsumer) -> float:
        """Forwards every due head; pauses partitions whose head is not due; returns how
        long to wait before the next head is due (at most _MAX_WAIT_S; IDLE_POLL_S when no
        head waits)."""
        now = time.time()
        next_due = now + _MAX_WAIT_S
        sends: list[asyncio.Future[object]] = []
        commits: dict[TopicPartition, int] = {}
        for tp, queue in list(self.held.items()):
            tier = self._topics.tier_of(tp.topic)
            while queue:
                record = queue[0]
                try:
                    msg = DeliveryMessage.decode(record.value)
                except MessageError as exc:
                    sends.append(await self._reject(record, exc.reason))
                else:
                    leave = now if tier is None else release_at(record, msg, tier)
                    if leave > now:
                        next_due = min(next_due, leave)
                        break
                    sends.append(await self._forward(msg, now))
                queue.popleft()
                commits[tp] = record.offset + 1
            self._set_paused(consumer, tp, paused=bool(queue))
        if sends:
            await asyncio.gather(*sends)
        if commits:
            try:
                await consumer.commit(commits)
            except (CommitFailedError, IllegalStateError) as exc:
                # Lost the partitions meanwhile: the new owner forwards them again (a
                # duplicate attempt at worst; ids are deterministic).
                log.warning("retry tier commit failed", error=str(exc))
        if not any(self.held.values()):
            return IDLE_POLL_S  # no head to watch: the poll returns when a record comes
        return max(0.005, min(_MAX_WAIT_S, next_due - time.time()))

    def _set_paused(self, consumer: AIOKafkaConsumer, tp: TopicPartition, *, paused: bool) -> None:
        if paused and tp not in self._paused:
            consumer.pause(tp)
            self._paused.add(tp)
        elif not paused and (tp in self._paused or tp in consumer.paused()):
            consumer.resume(tp)
            self._paused.discard(tp)

    async def _forward(self, msg: DeliveryMessage, now: float) -> asyncio.Future[object]:
        remaining = 0.0 if msg.due_at is None else msg.due_at - now
        tier = tier_for(remaining)
        topic = self._topics.deliveries if tier is None else self._topics.tier_topic(tier)
        fut: asyncio.Future[object] = await self._producer.send(topic, msg.encode(), key=msg.key)
        return fut

    async def _reject(
        self, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> asyncio.Future[object]:
        log.warning("undecodable retry message to dead-letter", reason=reason, topic=record.topic)
        metrics.dead_letter()
        fut: asyncio.Future[object] = await self._producer.send(
            self._topics.dlq,
            record.value,
            key=record.key,
            headers=[(REJECT_HEADER, reason.encode())],
        )
        return fut
