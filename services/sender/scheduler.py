"""A delivery job's life in a sender: dispatched from a fetched record, it is worked at
once, queued behind its webhook's cap, or parked in a retry tier when that queue would
wait too long; an attempt's follow-ups are retried through outages; what no attempt can
complete goes to the dead-letter topic. A finished job is reported through `on_finished`
(the consumer commits its offset)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from shared import metrics
from shared.core.attempts import AttemptRow, DeadLetter, Effect, Outcome, Retry
from shared.core.errors import HooklineError, ProduceFailed, is_retryable
from shared.core.messages import DeliveryMessage, MessageError
from shared.core.retry import RETRY_TIERS
from shared.runtime import Backoff

from .deliver import Prepared
from .offsets import Job, Part
from .slots import MAX_QUEUE_WAIT_S, Slots

log = structlog.get_logger(component="sender")

MAX_PARK_S = 3600.0

# A job's work is over: (partition, its Part, offset, whether it completed).
OnFinished = Callable[[TopicPartition, Part, int, bool], None]


class Attempts(Protocol):
    """What the scheduler needs of the `Deliverer`: an attempt's two stages."""

    async def prepare(self, msg: DeliveryMessage) -> Prepared | Outcome | None: ...

    async def call(self, prepared: Prepared) -> Outcome: ...


class Effects(Protocol):
    """What the scheduler needs of the `FollowUps`."""

    async def apply(self, effect: Effect) -> None: ...

    async def record(self, row: AttemptRow) -> None: ...

    async def reject(self, value: bytes | None, key: bytes | None, reason: str | None) -> None: ...


class Scheduler:
    """Runs the jobs of one sender: at most `concurrency` started and not through their
    request at once (HOOKLINE_SENDER_CONCURRENCY), at most `per_webhook` of one webhook's.
    The others wait in their webhook's queue; a free slot goes to the oldest of them among
    the webhooks below their cap (`fair.FairQueue`), whatever partition it came from."""

    def __init__(
        self,
        deliverer: Attempts,
        follow_ups: Effects,
        *,
        concurrency: int,
        per_webhook: int,
        owns: Callable[[Job], bool],
        on_finished: OnFinished,
        stop: asyncio.Event,
    ) -> None:
        self._deliverer = deliverer
        self._follow_ups = follow_ups
        self._concurrency = concurrency
        self._busy = 0  # jobs started and not through their request: at most concurrency
        self._slots: Slots[Job] = Slots(per_webhook)
        self._owns = owns
        self._on_finished = on_finished
        self._stop = stop
        self._tasks: set[asyncio.Task[None]] = set()
        self.pending = 0  # dispatched jobs not finished yet

    def dispatch(self, tp: TopicPartition, part: Part, record: ConsumerRecord) -> None:
        """Takes a fetched record on: works it, queues it or parks it."""
        part.wm.dispatch(record.offset)
        self.pending += 1
        try:
            msg = DeliveryMessage.decode(record.value)
        except MessageError as exc:
            self._spawn(self._reject(tp, part, record, exc.reason))
            return
        wid = msg.webhook_id
        if msg.parked:  # back from being parked: no longer counted as such
            self._slots.unpark(wid)
            msg = dataclasses.replace(msg, parked=False)
        job = Job(tp, part, record.offset, msg, at=record.timestamp)
        part.open[record.offset] = job
        if self._startable(wid):
            self._start(job)
            return
        if not self._slots.free(wid):  # behind its own slow webhook's cap: park if too long
            slots = self._slots
            wait = slots.expected_wait(wid, slots.queued(wid) + 1)
            if (
                wait > MAX_QUEUE_WAIT_S
                and (wait == float("inf") or slots.slow(wid))
                and (msg.due_at or 0) <= time.time()
            ):
                self._spawn(self._park(job, wait))
                return
        self._slots.enqueue(wid, job, job.at)

    def withdraw(self, which: Callable[[Job], bool]) -> list[Job]:
        """Takes the queued jobs `which` selects out of the queues (none of them starts
        until `resume`)."""
        return self._slots.remove(which)

    def resume(self, job: Job) -> None:
        """A withdrawn job: finished unsent if it was handed off or its partition is
        gone, else started or queued again."""
        wid = job.msg.webhook_id
        if job.offset in job.part.handed or not self._owns(job):
            self._finish(job.tp, job.part, job.offset, False)
        elif self._startable(wid):  # slots were freed meanwhile
            self._start(job)
        else:
            self._slots.enqueue(wid, job, job.at)

    def cancel(self) -> None:
        """Cancels every job still running (at the end of a drain)."""
        for task in list(self._tasks):
            task.cancel()

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

    def _startable(self, wid: str) -> bool:
        """A job of `wid` may start at once: a slot is free, its webhook is below its cap,
        and nothing of it waits (nothing of another webhook below its cap waits while a
        slot is free: `_release` starts it)."""
        return (
            self._busy < self._concurrency and self._slots.free(wid) and not self._slots.queued(wid)
        )

    def _start(self, job: Job) -> None:
        self._slots.take(job.msg.webhook_id)
        self._busy += 1
        self._spawn(self._work(job))

    def _release(self, done: Job) -> None:
        """A job's request is over (or it ended without one): its slots are free; start
        the oldest queued jobs still owned by us among the webhooks below their cap."""
        self._busy -= 1
        self._slots.release(done.msg.webhook_id, id(done))
        while self._busy < self._concurrency:
            nxt = self._slots.next(usable=self._owns, dropped=self._dropped)
            if nxt is None:
                return
            self._busy += 1
            self._spawn(self._work(nxt))

    def _dropped(self, job: Job) -> None:
        self.pending -= 1  # revoked meanwhile: dropped, the new owner redelivers it

    async def _work(self, job: Job) -> None:
        ok = False
        released = False
        delay = Backoff(self._stop)
        outcome: Outcome | None = None
        applied: set[int] = set()  # the outcome's effects done, by identity
        try:
            while True:
                try:
                    if outcome is None:
                        if self._given_up(job):
                            return
                        step = await self._deliverer.prepare(job.msg)
                        if step is None:  # not due: moved to a retry tier
                            ok = True
                            return
                        if isinstance(step, Prepared):
                            if self._given_up(job):
                                return
                            # Its age tells a slow endpoint from a busy sender: the
                            # time spent waiting for a slot does not count.
                            self._slots.began(job.msg.webhook_id, id(job))
                            step = await self._deliverer.call(step)
                        outcome = step
                        released = True
                        self._release(job)
                    if job.offset in job.part.handed:
                        # Handed off while its request ran: the copy carries the delivery
                        # on, so this attempt is logged but schedules no retry of its own.
                        outcome = outcome.handed_off()
                    # Only what follows the POST is retried from here on: never the POST,
                    # nor an effect already applied.
                    for effect in outcome.effects:
                        if id(effect) not in applied:
                            await self._follow_ups.apply(effect)
                            applied.add(id(effect))
                            _count(effect)
                    await self._follow_ups.record(outcome.row)
                    ok = True
                    return
                except Exception as exc:
                    if is_retryable(exc):
                        # An outage of the database or the broker: wait and try again
                        # rather than lose it or complete it; on shutdown it stays
                        # uncommitted and is redelivered.
                        if self._stop.is_set():
                            return
                        log.warning("delivery step failed; retrying", error=repr(exc))
                        await delay.sleep()
                        continue
                    # Bad data (a row the log refused, a value the database cannot
                    # store) or a bug: retrying would repeat it forever (and re-POST),
                    # so the message goes to the dead-letter topic with the reason.
                    if isinstance(exc, HooklineError):
                        log.error("delivery failed; dead-lettered", error=repr(exc))
                        ok = await self._dead_letter(job, str(exc))
                    else:
                        log.exception("delivery failed; dead-lettered")
                        ok = await self._dead_letter(job, repr(exc))
                    return
        finally:
            if not released:
                self._release(job)
            self._finish(job.tp, job.part, job.offset, ok)

    def _given_up(self, job: Job) -> bool:
        """Handed off or revoked while it waited: its copy or the new owner sends it."""
        return job.offset in job.part.handed or not self._owns(job)

    async def _dead_letter(self, job: Job, reason: str) -> bool:
        """Moves a message no attempt can complete to the dead-letter topic; True once
        acknowledged, False if stopped first."""
        log.error("delivery to dead-letter", reason=reason, delivery_id=job.msg.delivery_id)
        return await self._to_dlq(job.msg.encode(), job.msg.key, reason)

    async def _to_dlq(self, value: bytes | None, key: bytes | None, reason: str) -> bool:
        """Produces to the dead-letter topic with the reason header, retrying with backoff
        until acknowledged (True) or the sender stops (False: left uncommitted)."""
        try:
            await self._follow_ups.reject(value, key, reason)
        except ProduceFailed as exc:
            log.warning("dead-letter not published; left uncommitted", error=repr(exc))
            return False
        metrics.dead_letter()
        return True

    async def _park(self, job: Job, wait: float) -> None:
        """Defers a message (no attempt made) until its webhook's backlog should have
        drained: spread over time, a dead endpoint's overflow comes back about once each
        rather than cycling through the shortest tier every second."""
        self._slots.park(job.msg.webhook_id)
        wait = min(max(wait, RETRY_TIERS[0].delay_s), MAX_PARK_S)
        parked = dataclasses.replace(job.msg, due_at=time.time() + wait, parked=True)
        ok = False
        try:
            await self._follow_ups.apply(Retry(parked, wait))
            ok = True
            metrics.parked(wait)
        except ProduceFailed as exc:
            log.warning("parking not published; left uncommitted", error=repr(exc))
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
        self.pending -= 1
        self._on_finished(tp, part, offset, ok)


def _count(effect: Effect) -> None:
    """An attempt's follow-up applied: a retry into its tier, or a dead-letter copy."""
    if isinstance(effect, Retry):
        metrics.retried(effect.delay_s)
    elif isinstance(effect, DeadLetter):
        metrics.dead_letter()
