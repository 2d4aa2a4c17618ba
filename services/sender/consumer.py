"""The sender's consumer of `hookline.deliveries`: fetches with many deliveries in flight
per partition, takes fetched records on oldest first across partitions while its buffer
has room (pausing the partitions whose records wait), commits each partition only up to
its contiguous completed watermark, and on a rebalance or a stop hands off what is still
unfinished (DESIGN.md section 8)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.kafka import poll

from .offsets import Offsets, Part
from .scheduler import OnFinished, Scheduler

log = structlog.get_logger(component="sender")

COMMIT_INTERVAL_S = 0.2
# On a rebalance or a stop, the deliveries of the partitions given up that are still
# unfinished after this long are handed off (see `DeliveryConsumer._hand_off`).
REVOKE_WAIT_S = 3.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: DeliveryConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.assign(assigned)


@dataclass(frozen=True)
class Consuming:
    """What a sender consumes, how much it buffers, and how it gives partitions up."""

    topic: str
    max_pending: int  # taken on and not finished: at it, fetched records wait
    drain_timeout: float = 10.0
    revoke_wait: float = REVOKE_WAIT_S


class DeliveryConsumer:
    """Feeds fetched records to the scheduler and accounts for them once finished
    (`finished`, the callback the scheduler is made with: it never imports this module);
    `run()` until `stop`, then drains."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        scheduler: Callable[[OnFinished], Scheduler],
        *,
        config: Consuming,
        offsets: Offsets,
        stop: asyncio.Event,
        ready: asyncio.Event | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._config = config
        self._offsets = offsets
        self._stop = stop
        self._ready = ready or asyncio.Event()  # set once partitions were assigned
        # Fetched, not yet taken on (the buffer was full); their partitions are paused.
        self._fetched: dict[TopicPartition, deque[ConsumerRecord]] = {}
        self._held: set[TopicPartition] = set()
        self._full = False
        self._progress = asyncio.Event()
        self._finishing = asyncio.Event()  # a job finished since the last commit
        self.listener = _Listener(self)
        # The scheduler reports each finished job back here.
        self._scheduler = scheduler(self.finished)

    async def run(self) -> None:
        """Fetches and dispatches until `stop`; then drains: waits briefly for in-flight
        work, hands off what is unfinished, commits, and lets requests still running end
        within the drain time."""
        committer = asyncio.create_task(self._commit_forever(), name="sender-commits")
        consumer, scheduler = self._consumer, self._scheduler
        try:
            while not self._stop.is_set():
                batch = await poll(consumer, self._stop, max_records=1000)
                for tp, records in batch.items():
                    if tp in self._offsets.parts:  # else revoked meanwhile: not ours
                        self._fetched.setdefault(tp, deque()).extend(records)
                self._take_on()
            log.info("sender draining", in_flight=scheduler.pending)
            consumer.pause(*consumer.assignment())
            started = time.monotonic()
            await self._wait_until(
                lambda: scheduler.pending == 0,
                min(self._config.revoke_wait, self._config.drain_timeout),
            )
            await self._hand_off(list(self._offsets.parts.values()))
            await self._commit()
            # Requests still in flight get the rest of the drain time to end and be logged.
            await self._wait_until(
                lambda: scheduler.pending == 0,
                self._config.drain_timeout - (time.monotonic() - started),
            )
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    async def commit(self) -> None:
        """Commits every owned partition up to its watermark (the last commit of a stop,
        once the delivery log wrote what finished)."""
        await self._commit()

    def cancel(self) -> None:
        """Cancels the jobs still running: their offsets stay uncommitted (replayed)."""
        self._scheduler.cancel()

    def finished(self, tp: TopicPartition, part: Part, offset: int, ok: bool) -> None:
        """A job's work is over: its offset may complete, the buffer has room."""
        self._offsets.finish(tp, part, offset, ok)
        self._take_on()
        self._progress.set()
        self._finishing.set()

    def _take_on(self) -> None:
        """Dispatches fetched records while the buffer has room, the oldest head of the
        partitions first (not one partition's whole fetch, then the next's): a partition
        busier than the others is not left behind by taking turns. A partition whose
        records wait here is paused until they are all taken on."""
        if self._stop.is_set():
            return  # draining: what was not taken on stays uncommitted
        fetched, parts, scheduler = self._fetched, self._offsets.parts, self._scheduler
        limit = self._config.max_pending
        while fetched and scheduler.pending < limit:
            tp = min(fetched, key=lambda t: fetched[t][0].timestamp)
            records = fetched[tp]
            part = parts.get(tp)
            if part is None:  # revoked: the new owner fetches these
                del fetched[tp]
                continue
            record = records.popleft()
            scheduler.dispatch(tp, part, record)
            part.taken = record.offset
            if not records:
                del fetched[tp]
        if fetched and not self._full:
            self._full = True
            log.info("sender buffer full", in_flight=scheduler.pending)
        elif self._full and scheduler.pending <= limit // 2:
            self._full = False  # logged again only once it had room for a while
        if not fetched and not self._held:
            return
        consumer, assigned = self._consumer, self._consumer.assignment()
        hold = (fetched.keys() & assigned) - self._held
        free = self._held - fetched.keys()
        if hold:
            consumer.pause(*hold)
        if free:
            consumer.resume(*(free & assigned))
        self._held = (self._held | hold) - free

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

    async def _commit_forever(self) -> None:
        """Commits every COMMIT_INTERVAL_S while jobs finish; at rest it sleeps until one
        does (a commit that failed is tried again at the next interval)."""
        while True:
            await self._finishing.wait()
            self._finishing.clear()
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self._commit()
            if self._offsets.uncommitted():
                self._finishing.set()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        await self._offsets.commit(self._consumer, only, note=self._waiting)

    def _waiting(self, tp: TopicPartition, part: Part) -> str:
        """The records of `tp` not yet taken on, as last seen (its end offset from the
        latest fetch): the commit's metadata, by which the group's leader tells a sender
        that is behind from one whose watermark only waits for slow requests (see
        `balance`). Empty while unknown; a lower bound while the partition is paused (its
        end offset is the last fetch's)."""
        end = self._consumer.highwater(tp)
        if end is None or part.taken is None:
            return ""
        return str(max(0, end - part.taken - 1))

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Waits briefly for the revoked partitions' in-flight work, hands off what is
        still unfinished, commits, and forgets them."""
        # What was fetched and not taken on is the new owner's: none of it starts here.
        self._drop_fetched(revoked)
        parts = self._offsets.parts
        mine = {tp for tp in revoked if tp in parts}
        try:
            await self._wait_until(
                lambda: all(not parts[tp].open for tp in mine), self._config.revoke_wait
            )
            await self._hand_off([parts[tp] for tp in mine])
            await self._commit(mine)
        finally:
            # Always: a stale partition in the commit would make every commit fail.
            self._offsets.forget(mine)

    async def _hand_off(self, parts: list[Part]) -> None:
        """Requeues what is unfinished in partitions being given up (`Offsets.hand_off`).
        Their jobs queued behind a webhook's cap leave the queues first, so that none is
        started meanwhile; those not handed off go back (or end if revoked)."""
        if not parts:
            return
        given_up = {id(part) for part in parts}
        queued = self._scheduler.withdraw(lambda j: id(j.part) in given_up)
        await self._offsets.hand_off(self._producer, self._config.topic, parts)
        for job in queued:
            self._scheduler.resume(job)

    def assign(self, assigned: set[TopicPartition]) -> None:
        # A partition (re)assigned is fetched afresh from its committed offset, unpaused.
        self._drop_fetched(assigned)
        self._offsets.assign(assigned)
        log.info("sender partitions assigned", partitions=len(assigned))
        self._ready.set()

    def _drop_fetched(self, tps: set[TopicPartition]) -> None:
        """Forgets records fetched and not taken on (never dispatched, so never committed:
        whoever owns the partition next fetches them again)."""
        for tp in tps:
            self._fetched.pop(tp, None)
            self._held.discard(tp)
