"""The sender: consumes `hookline.deliveries` with many deliveries in flight per
partition, commits each partition only up to its contiguous completed watermark, and runs
the retry tiers beside it (DESIGN.md sections 1, 6, 7, 8)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from shared.config import ConfigError, Settings
from shared.core.attempts import FailureStreak
from shared.core.messages import DeliveryMessage, MessageError
from shared.core.retry import RETRY_TIERS, tier_for
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.kafka import HOT_PATH_FETCH_WAIT_MS, make_consumer, make_producer
from shared.log.numbering import AttemptNumbers
from shared.log.partitions import maintain_forever
from shared.log.writer import DeliveryLog, LogClosed, RowRejected
from shared.logging import configure_logging
from shared.runtime import instance_name, run
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .deliver import Attempt, Deliverer
from .http import WebhookClient
from .offsets import Job, Offsets, Part
from .retry_tiers import REJECT_HEADER, RETRY_GROUP, RetryTiers, Topics
from .slots import MAX_QUEUE_WAIT_S, Slots

log = structlog.get_logger(component="sender")

GROUP = "hookline-sender"
COMMIT_INTERVAL_S = 0.2
# On a rebalance or a stop, the deliveries of the partitions given up that are still
# unfinished after this long are handed off (see Sender._hand_off).
REVOKE_WAIT_S = 3.0
MAX_PARK_S = 3600.0
PARKED = "parked"  # DeliveryMessage.extra flag: deferred behind a slow webhook, not attempted
# What is retried in place (with backoff, until stop): outages of the database or the
# broker. Anything else a delivery raises is bad data or a bug and is dead-lettered.
OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,  # connection errors and TimeoutError
    KafkaError,
    LogClosed,
)


class _Backoff:
    """Doubling sleeps from 0.2 s up to 10 s."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self._next = first
        self._cap = cap

    async def sleep(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._cap)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sender.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._sender.assign(assigned)


class Sender:
    """One sender replica: `run()` until `stop` is set, then drains and commits."""

    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        *,
        topics: Topics | None = None,
        group_id: str = GROUP,
        retry_group_id: str = RETRY_GROUP,
        client_id: str | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._topics = topics or Topics()
        self._group_id = group_id
        self._retry_group_id = retry_group_id
        self._client_id = client_id or instance_name("sender")
        self._drain_timeout = drain_timeout
        self._sem = asyncio.Semaphore(settings.sender_concurrency)
        self._slots: Slots[Job] = Slots(settings.sender_inflight_per_webhook)
        self._max_pending = max(8 * settings.sender_concurrency, 2000)
        self._offsets = Offsets()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._paused = False
        self._progress = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._deliverer: Deliverer | None = None
        self.ready = asyncio.Event()  # partitions assigned at least once (for tests)

    @property
    def group_id(self) -> str:
        return self._group_id

    # -- composition -------------------------------------------------------------------

    async def run(self) -> None:
        s = self._settings
        pool = await create_pool(s.database_url, min_size=1, max_size=8)
        producer = make_producer(s.kafka_bootstrap, client_id=self._client_id)
        self._producer = producer
        table = WebhookTable(s.kafka_bootstrap, client_id=f"{self._client_id}-table")
        client = WebhookClient(
            s.allowed_targets,
            concurrency=s.sender_concurrency,
            max_request_bytes=s.max_payload_bytes + 64 * 1024,
            bounded=False,  # every call already holds one of the sender's global slots
        )
        delivery_log = DeliveryLog(pool, on_failures=self._on_failures)
        store = WebhookStore(
            pool, SecretBox(s.secret_key), allow=s.allowed_targets, max_per_repo=10**9
        )
        tiers = RetryTiers(
            s.kafka_bootstrap,
            producer,
            self._stop,
            topics=self._topics,
            group_id=self._retry_group_id,
            client_id=f"{self._client_id}-retry",
        )
        maintenance: asyncio.Task[None] | None = None
        tiers_task: asyncio.Task[None] | None = None
        try:
            await producer.start()
            await table.start()
            await client.start()
            await delivery_log.start()
            self._deliverer = Deliverer(
                s,
                table=table,
                store=store,
                client=client,
                delivery_log=delivery_log,
                numbers=AttemptNumbers(pool),
                producer=producer,
                topics=self._topics,
                stop=self._stop,
            )
            maintenance = asyncio.create_task(
                maintain_forever(pool, s.retention_days, self._stop)
            )
            tiers_task = asyncio.create_task(tiers.run(), name="retry-tiers")
            await self._consume(delivery_log)
        finally:
            if tiers_task is not None:
                await asyncio.wait({tiers_task}, timeout=5.0)
                tiers_task.cancel()
                with contextlib.suppress(BaseException):
                    await tiers_task
            if maintenance is not None:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance
            await delivery_log.close()
            await client.close()
            await table.stop()
            await producer.stop()
            await pool.close()
            log.info("sender stopped")

    async def _on_failures(self, streaks: list[FailureStreak]) -> None:
        if self._deliverer is not None:
            await self._deliverer.on_failures(streaks)

    # -- the consume loop --------------------------------------------------------------

    async def _consume(self, delivery_log: DeliveryLog) -> None:
        consumer = make_consumer(
            self._settings.kafka_bootstrap,
            group_id=self._group_id,
            client_id=self._client_id,
            fetch_max_wait_ms=HOT_PATH_FETCH_WAIT_MS,
        )
        consumer.subscribe([self._topics.deliveries], listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        committer = asyncio.create_task(self._commit_forever(), name="sender-commits")
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=1000)
                for tp, records in batch.items():
                    part = self._offsets.parts.get(tp)
                    if part is None:
                        continue  # revoked while fetched: the new owner gets these
                    for record in records:
                        self._dispatch(tp, part, record)
                self._backpressure()
            log.info("sender draining", in_flight=self._pending)
            consumer.pause(*consumer.assignment())
            started = time.monotonic()
            await self._wait_until(
                lambda: self._pending == 0, min(REVOKE_WAIT_S, self._drain_timeout)
            )
            await self._hand_off(list(self._offsets.parts.values()))
            await self._commit()
            # Requests still in flight get the rest of the drain time to end and be logged.
            await self._wait_until(
                lambda: self._pending == 0, self._drain_timeout - (time.monotonic() - started)
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout):
                    await delivery_log.flush()
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._commit()
        finally:
            committer.cancel()
            for task in list(self._tasks):
                task.cancel()
            self._consumer = None
            with contextlib.suppress(KafkaError):
                await consumer.stop()

    def _dispatch(self, tp: TopicPartition, part: Part, record: ConsumerRecord) -> None:
        part.wm.dispatch(record.offset)
        self._pending += 1
        try:
            msg = DeliveryMessage.decode(record.value)
        except MessageError as exc:
            self._spawn(self._reject(tp, part, record, exc.reason))
            return
        wid = msg.webhook_id
        if msg.extra.get(PARKED):  # back from being parked: no longer counted as such
            self._slots.unpark(wid)
            msg = dataclasses.replace(
                msg, extra={k: v for k, v in msg.extra.items() if k != PARKED}
            )
        job = Job(tp, part, record.offset, msg)
        part.open[record.offset] = job
        if self._slots.free(wid):
            self._slots.take(wid)
            self._spawn(self._work(job))
            return
        wait = self._slots.expected_wait(wid, self._slots.queued(wid) + 1)
        if wait > MAX_QUEUE_WAIT_S and (msg.due_at or 0) <= time.time():
            self._spawn(self._park(job, wait))
        else:
            self._slots.enqueue(wid, job)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        """Forgets a finished task, logging what it raised (never left unretrieved)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("sender task failed", error=repr(exc), exc_info=exc)

    def _release(self, done: Job) -> None:
        """A webhook's slot is free: start its next queued job still owned by us."""
        nxt = self._slots.release(
            done.msg.webhook_id, id(done), usable=self._offsets.owns, dropped=self._dropped
        )
        if nxt is not None:
            self._spawn(self._work(nxt))

    def _dropped(self, job: Job) -> None:
        self._pending -= 1  # revoked meanwhile: dropped, the new owner redelivers it

    async def _work(self, job: Job) -> None:
        assert self._deliverer is not None
        deliverer = self._deliverer
        ok = False
        released = False
        delay = _Backoff()
        step: Attempt | None = None
        try:
            while True:
                try:
                    if step is None:
                        async with self._sem:
                            if job.offset in job.part.handed or not self._offsets.owns(job):
                                return  # given up while waiting: its copy or new owner sends
                            # Its age tells a slow endpoint from a busy sender: the time
                            # spent waiting for a global slot above does not count.
                            self._slots.began(job.msg.webhook_id, id(job))
                            step = await deliverer.attempt(job.msg)
                        if step is None:  # not due: moved to a retry tier
                            ok = True
                            return
                        released = True
                        self._release(job)
                    if job.offset in job.part.handed:
                        # Handed off while its request ran: the copy carries the delivery
                        # on, so this attempt is logged but schedules no retry of its own.
                        step.retry = step.dead = None
                    # Only what follows the POST is retried from here on: never the POST.
                    await (await deliverer.follow_up(step))
                    ok = True
                    return
                except RowRejected as exc:
                    ok = await self._dead_letter(job, str(exc))
                    return
                except asyncpg.DataError as exc:  # a PostgresError, but no outage
                    log.exception("delivery refused by the database; dead-lettered")
                    ok = await self._dead_letter(job, repr(exc))
                    return
                except OUTAGES as exc:
                    # The database or the broker: wait and try again rather than lose it
                    # or complete it; on shutdown it stays uncommitted and is redelivered.
                    if self._stop.is_set():
                        return
                    log.warning("delivery step failed; retrying", error=repr(exc))
                    await delay.sleep()
                except Exception as exc:
                    # Bad data or a bug: retrying would repeat it forever (and re-POST),
                    # so the message goes to the dead-letter topic with the reason.
                    log.exception("delivery failed; dead-lettered")
                    ok = await self._dead_letter(job, repr(exc))
                    return
        finally:
            if not released:
                self._release(job)
            self._finish(job.tp, job.part, job.offset, ok)

    async def _dead_letter(self, job: Job, reason: str) -> bool:
        """Moves a message no attempt can complete to the dead-letter topic; True once
        acknowledged, False if stopped first."""
        log.error("delivery to dead-letter", reason=reason, delivery_id=job.msg.delivery_id)
        return await self._to_dlq(job.msg.encode(), job.msg.key, reason)

    async def _to_dlq(self, value: bytes | None, key: bytes | None, reason: str) -> bool:
        """Produces to the dead-letter topic with the reason header, retrying with backoff
        until acknowledged (True) or the sender stops (False: left uncommitted)."""
        assert self._producer is not None
        delay = _Backoff()
        while True:
            try:
                await self._producer.send_and_wait(
                    self._topics.dlq, value, key=key, headers=[(REJECT_HEADER, reason.encode())]
                )
                return True
            except KafkaError as exc:
                if self._stop.is_set():
                    return False
                log.warning("dead-letter publish failed; retrying", error=repr(exc))
                await delay.sleep()

    async def _park(self, job: Job, wait: float) -> None:
        """Defers a message (no attempt made) until its webhook's backlog should have
        drained: spread over time, a dead endpoint's overflow comes back about once each
        rather than cycling through the shortest tier every second."""
        assert self._deliverer is not None
        self._slots.park(job.msg.webhook_id)
        wait = min(max(wait, RETRY_TIERS[0].delay_s), MAX_PARK_S)
        tier = tier_for(wait) or RETRY_TIERS[0]
        parked = dataclasses.replace(
            job.msg, due_at=time.time() + wait, extra={**job.msg.extra, PARKED: True}
        )
        ok = False
        try:
            await self._deliverer.send(self._topics.tier_topic(tier), parked)
            ok = True
        finally:
            self._finish(job.tp, job.part, job.offset, ok)

    async def _reject(
        self, tp: TopicPartition, part: Part, record: ConsumerRecord, reason: str
    ) -> None:
        log.warning("undecodable delivery to dead-letter", reason=reason, partition=tp.partition)
        ok = False
        try:
            ok = await self._to_dlq(record.value, record.key, reason)
        finally:
            self._finish(tp, part, record.offset, ok)

    def _finish(self, tp: TopicPartition, part: Part, offset: int, ok: bool) -> None:
        self._pending -= 1
        self._offsets.finish(tp, part, offset, ok)
        self._backpressure()
        self._progress.set()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once `predicate()` holds (checked after each finished job), False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.1)):
                    await self._progress.wait()
        return True

    def _backpressure(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if not self._paused and self._pending >= self._max_pending:
            self._paused = True
            consumer.pause(*consumer.assignment())
            log.info("sender paused: buffer full", in_flight=self._pending)
        elif self._paused and self._pending <= self._max_pending // 2 and not self._stop.is_set():
            self._paused = False
            consumer.resume(*consumer.assignment())

    # -- offsets and rebalancing -------------------------------------------------------

    async def _commit_forever(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if self._consumer is not None:
            await self._offsets.commit(self._consumer, only)

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Waits briefly for the revoked partitions' in-flight work, hands off what is
        still unfinished, commits, and forgets them."""
        parts = self._offsets.parts
        mine = {tp for tp in revoked if tp in parts}
        try:
            await self._wait_until(lambda: all(not parts[tp].open for tp in mine), REVOKE_WAIT_S)
            await self._hand_off([parts[tp] for tp in mine])
            await self._commit(mine)
        finally:
            # Always: a stale partition in the commit would make every commit fail.
            self._offsets.forget(mine)

    async def _hand_off(self, parts: list[Part]) -> None:
        """Requeues what is unfinished in partitions being given up (`Offsets.hand_off`).
        Their jobs queued behind a webhook's cap leave the queues first, so that none is
        started meanwhile; those not handed off go back (or are dropped if revoked)."""
        if self._producer is None or not parts:
            return
        given_up = {id(part) for part in parts}
        queued = self._slots.remove(lambda j: id(j.part) in given_up)
        await self._offsets.hand_off(self._producer, self._topics.deliveries, parts)
        for job in queued:
            wid = job.msg.webhook_id
            if job.offset in job.part.handed or not self._offsets.owns(job):
                self._finish(job.tp, job.part, job.offset, False)
            elif self._slots.free(wid):  # its webhook's requests ended meanwhile
                self._slots.take(wid)
                self._spawn(self._work(job))
            else:
                self._slots.enqueue(wid, job)

    def assign(self, assigned: set[TopicPartition]) -> None:
        self._offsets.assign(assigned)
        if self._paused and self._consumer is not None:
            self._consumer.pause(*assigned)
        log.info("sender partitions assigned", partitions=len(assigned))
        self.ready.set()


async def _main(settings: Settings, stop: asyncio.Event) -> None:
    try:
        settings.require("secret_key")
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    configure_logging(settings.log_level, service="sender")
    await Sender(settings, stop).run()


def main() -> None:
    run(_main)
