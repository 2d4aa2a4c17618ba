"""The partitions a sender owns: each one's contiguous watermark and unfinished deliveries,
the commits up to the watermark, and the hand-off of what is unfinished when a partition
is given up (DESIGN.md section 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from shared.core.messages import DeliveryMessage
from shared.core.watermark import Watermark

log = structlog.get_logger(component="sender")

# The longest a hand-off waits for its copies to be acknowledged; those acknowledged later
# leave their offsets unfinished (replayed: at-least-once).
HANDOFF_TIMEOUT_S = 10.0


@dataclass(eq=False)  # compared by identity: a reassigned partition is a new Part
class Part:
    """One owned partition."""

    wm: Watermark = field(default_factory=Watermark)
    open: dict[int, Job] = field(default_factory=dict)  # dispatched, not finished
    handed: set[int] = field(default_factory=set)  # of those, completed by a hand-off
    taken: int | None = None  # the last offset taken on (dispatched)


@dataclass
class Job:
    """A delivery message being worked on, and where its offset is accounted."""

    tp: TopicPartition
    part: Part
    offset: int
    msg: DeliveryMessage
    at: float = 0.0  # its record's timestamp (ms): waiting jobs start oldest first


class Offsets:
    """Owned partitions by TopicPartition; a partition given up is forgotten, so the work
    still running for it completes nothing (`owns` tells)."""

    def __init__(self) -> None:
        self.parts: dict[TopicPartition, Part] = {}
        self._lock = asyncio.Lock()
        self._handing = asyncio.Lock()  # a stop's hand-off and a revoke's never overlap

    def assign(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.parts[tp] = Part()

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.parts.pop(tp, None)

    def owns(self, job: Job) -> bool:
        return self.parts.get(job.tp) is job.part

    def finish(self, tp: TopicPartition, part: Part, offset: int, ok: bool) -> None:
        """A message's work is over; its offset completes if it succeeded and the
        partition is still ours (and a hand-off did not complete it already)."""
        part.open.pop(offset, None)
        if offset in part.handed:
            part.handed.discard(offset)
        elif ok and self.parts.get(tp) is part:
            part.wm.complete(offset)

    def uncommitted(self) -> bool:
        """Whether any owned partition's watermark moved past its last commit."""
        return any(part.wm.committable() is not None for part in self.parts.values())

    async def commit(
        self,
        consumer: AIOKafkaConsumer,
        only: set[TopicPartition] | None = None,
        note: Callable[[TopicPartition, Part], str] | None = None,
    ) -> None:
        """Commits every owned partition's watermark that moved (a failure is logged: the
        next commit carries the same positions), each with `note(tp, part)` as its
        metadata, which the group's members can read back."""
        async with self._lock:
            offsets: dict[TopicPartition, tuple[int, str]] = {}
            for tp, part in self.parts.items():
                if only is not None and tp not in only:
                    continue
                position = part.wm.committable()
                if position is not None:
                    offsets[tp] = (position, note(tp, part) if note else "")
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                log.warning("offset commit failed", error=str(exc))
                return
            for tp, (position, _) in offsets.items():
                if tp in self.parts:
                    self.parts[tp].wm.committed(position)

    async def hand_off(self, producer: AIOKafkaProducer, topic: str, parts: list[Part]) -> None:
        """Requeues the unfinished deliveries of partitions being given up at the end of
        their own partition, and completes their offsets.

        Without it the committed offset stays below the oldest of them, and the next owner
        replays every delivery behind it: one request to an endpoint that never answers
        would have every fast webhook sharing its partition sent its last `timeout_s`
        seconds again. Now only the requeued ones can arrive twice (a request still in
        flight may yet succeed): at-least-once, with the same delivery id. If the produce
        fails, those stay unfinished and are replayed as before."""
        async with self._handing:
            jobs = [j for p in parts for off, j in p.open.items() if off not in p.handed]
            if not jobs:
                return
            futures: list[asyncio.Future[object]] = []
            try:
                async with asyncio.timeout(HANDOFF_TIMEOUT_S):
                    for job in jobs:
                        futures.append(
                            await producer.send(
                                topic,
                                job.msg.encode(),
                                key=job.msg.key,
                                partition=job.tp.partition,
                            )
                        )
                    await asyncio.wait(futures)
            except (KafkaError, TimeoutError) as exc:
                log.warning("hand-off not acknowledged; left to be replayed", error=repr(exc))
            handed = 0
            for job, fut in zip(jobs, futures, strict=False):
                if not fut.done() or fut.cancelled() or fut.exception() is not None:
                    continue
                if job.offset in job.part.open:
                    job.part.handed.add(job.offset)
                job.part.wm.complete(job.offset)  # a no-op if it completed meanwhile
                handed += 1
            log.info("unfinished deliveries handed off", handed=handed, of=len(jobs))
