"""Per-webhook in-flight caps (DESIGN.md section 8): at most `cap` requests of a webhook at
once in a sender; the rest wait in the webhook's queue (`fair.FairQueue`: the next job to
start is the oldest among the webhooks below their cap), and what would wait too long is
parked by the caller instead.

A slow webhook whose queue would take longer than MAX_QUEUE_WAIT_S to drain, judged by how
long its oldest request in flight has been waiting, gets further messages parked in the
shortest retry tier: one slow or dead endpoint then holds a few slots and a short queue,
never the buffer whose limit pauses whole partitions for everyone. A fast webhook's burst
(hundreds queued, milliseconds each) drains at once and is not parked.

Slow is relative: its requests take SLOW_FACTOR times the typical webhook's here (the
median of their request times). When the sender itself is saturated, every request waits
on its event loop and every queue grows; parking any of them would only send it round a
delay tier (a produce, a fetch and a decode more) while nobody's wait got shorter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .fair import FairQueue

MAX_QUEUE_WAIT_S = 2.0
# A webhook whose requests take this many times the typical webhook's is slow.
SLOW_FACTOR = 4.0
# The typical request time is computed again at most this often.
TYPICAL_EVERY_S = 1.0
MAX_QUEUED_PER_WEBHOOK = 5000
# Request times remembered at most: past it, those of webhooks with nothing in flight,
# queued or parked are forgotten (a webhook seen once does not stay for good).
MAX_REMEMBERED = 10_000

J = TypeVar("J")


class Slots(Generic[J]):
    """Counts each webhook's jobs started and not yet through their request, queues the
    others, and estimates how long a queued job would wait behind its webhook's cap."""

    def __init__(self, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self._clock = clock
        self._running: dict[str, int] = {}
        self._started: dict[str, dict[Hashable, float]] = {}  # webhook -> job -> began
        self._duration: dict[str, float] = {}  # webhook -> moving average of request time
        self._parked: dict[str, int] = {}  # webhook -> its messages parked, not yet back
        self._queue: FairQueue[J] = FairQueue()
        self._typical = 0.0  # the median of the webhooks' request times, as of _typical_at
        self._typical_at = float("-inf")

    def running(self, wid: str) -> int:
        return self._running.get(wid, 0)

    def queued(self, wid: str) -> int:
        return self._queue.queued(wid)

    @property
    def waiting(self) -> int:
        """Jobs queued, of every webhook."""
        return len(self._queue)

    def parked(self, wid: str) -> int:
        return self._parked.get(wid, 0)

    def free(self, wid: str) -> bool:
        return self._running.get(wid, 0) < self.cap

    def take(self, wid: str) -> None:
        """A job of this webhook starts: one more slot in use."""
        self._running[wid] = self._running.get(wid, 0) + 1

    def enqueue(self, wid: str, job: J, at: float) -> None:
        """Queues a job that cannot start yet; `at` (its record's timestamp) orders it
        against the other webhooks' jobs."""
        self._queue.push(wid, job, at)

    def next(self, usable: Callable[[J], bool], dropped: Callable[[J], None]) -> J | None:
        """The oldest queued job of a webhook below its cap that is still `usable`, its
        slot taken (start it); None if there is none. Queued jobs that are not usable any
        more are passed to `dropped`."""
        while (got := self._queue.pop(self.free)) is not None:
            wid, job = got
            if usable(job):
                self.take(wid)
                return job
            dropped(job)
        return None

    def park(self, wid: str) -> None:
        self._parked[wid] = self._parked.get(wid, 0) + 1

    def unpark(self, wid: str) -> None:
        """A parked message came back."""
        left = self._parked.get(wid, 0) - 1
        if left > 0:
            self._parked[wid] = left
        else:
            self._parked.pop(wid, None)

    def began(self, wid: str, job: Hashable) -> None:
        """The job's request is being sent now (time waiting for a global slot before this
        does not count: it tells a slow endpoint from a busy sender)."""
        self._started.setdefault(wid, {})[job] = self._clock()

    def expected_wait(self, wid: str, queued: int) -> float:
        """How long the `queued`-th message would wait behind this webhook's cap (and its
        messages parked earlier), judged by the age of its oldest request in flight."""
        if queued >= MAX_QUEUED_PER_WEBHOOK:
            return float("inf")
        return (queued + self._parked.get(wid, 0)) * self._age(wid) / self.cap

    def slow(self, wid: str) -> bool:
        """Its requests take SLOW_FACTOR times the typical webhook's here: its queue waits
        on its endpoint, not on this sender."""
        return self._age(wid) > SLOW_FACTOR * self.typical()

    def typical(self) -> float:
        """The median of the webhooks' remembered request times (0 before any ended),
        computed again at most every TYPICAL_EVERY_S."""
        now = self._clock()
        if now - self._typical_at >= TYPICAL_EVERY_S:
            times = sorted(self._duration.values())
            self._typical = times[len(times) // 2] if times else 0.0
            self._typical_at = now
        return self._typical

    def _age(self, wid: str) -> float:
        """How long this webhook's requests take: its oldest in flight's age, or its
        remembered request time if longer; 0 with nothing in flight."""
        started = self._started.get(wid)
        if not started:
            return 0.0
        return max(self._clock() - min(started.values()), self._duration.get(wid, 0.0))

    def release(self, wid: str, job: Hashable) -> None:
        """The job's request ended (or it ended without one): its slot is free, and its
        webhook's queue competes for the next start again."""
        started = self._started.get(wid)
        if started is not None:
            began = started.pop(job, None)
            if began is not None:
                # Remember how long this webhook takes, so that its backlog estimate does
                # not drop to zero when a wave of its timed-out requests ends at once.
                took = self._clock() - began
                self._duration[wid] = 0.8 * self._duration.get(wid, took) + 0.2 * took
                if len(self._duration) > MAX_REMEMBERED:
                    self._forget_idle()
            if not started:
                del self._started[wid]
        left = self._running.get(wid, 1) - 1
        if left > 0:
            self._running[wid] = left
        else:
            self._running.pop(wid, None)
        self._queue.unblock(wid)

    def remembered(self) -> int:
        """How many webhooks' request times are held."""
        return len(self._duration)

    def _forget_idle(self) -> None:
        busy = self._running.keys() | self._queue.webhooks() | self._parked.keys()
        self._duration = {w: d for w, d in self._duration.items() if w in busy}

    def remove(self, which: Callable[[J], bool]) -> list[J]:
        """Takes every queued job `which` selects out of the queues; returns them."""
        return self._queue.remove(which)
