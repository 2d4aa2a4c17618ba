"""The order in which a sender starts its waiting jobs (issue 14 item 5): each webhook's
jobs wait in its own queue, and the next job started is the oldest head of the queues of
webhooks below their cap, not the next in partition or arrival-on-this-sender order.

Oldest first across webhooks makes every webhook's wait the same under saturation, however
its events are spread over partitions; the per-webhook cap (applied by the caller through
`free`) keeps one webhook's burst from taking every slot, so another webhook's few jobs
start beside a big backlog rather than after it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

J = TypeVar("J")

# (age key, arrival number): a job's place in the global order
Order = tuple[float, int]


class FairQueue(Generic[J]):
    """Per-webhook FIFO queues, served oldest head first among the webhooks `free` admits.

    Each webhook with queued jobs is either in the heap (by its head's order) or blocked
    (at its cap when last looked at: back in the heap on `unblock`)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[tuple[Order, J]]] = {}
        self._heap: list[tuple[Order, str]] = []
        self._blocked: set[str] = set()
        self._arrivals = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def queued(self, wid: str) -> int:
        queue = self._queues.get(wid)
        return len(queue) if queue else 0

    def webhooks(self) -> set[str]:
        """The webhooks with jobs queued."""
        return set(self._queues)

    def push(self, wid: str, job: J, at: float) -> None:
        """Queues `job` behind its webhook's others; `at` orders it against other webhooks'
        jobs (older first; the order of pushing breaks ties)."""
        order = (at, next(self._arrivals))
        queue = self._queues.get(wid)
        if queue is None:
            queue = self._queues[wid] = deque()
            if wid not in self._blocked:
                heapq.heappush(self._heap, (order, wid))
        queue.append((order, job))
        self._len += 1

    def pop(self, free: Callable[[str], bool]) -> tuple[str, J] | None:
        """The oldest head among the webhooks `free` admits, taken out; None if none is.
        Webhooks found not free are set aside until `unblock`."""
        while self._heap:
            _, wid = self._heap[0]
            if not free(wid):
                heapq.heappop(self._heap)
                self._blocked.add(wid)
                continue
            queue = self._queues[wid]
            _, job = queue.popleft()
            self._len -= 1
            if queue:
                heapq.heapreplace(self._heap, (queue[0][0], wid))
            else:
                heapq.heappop(self._heap)
                del self._queues[wid]
            return wid, job
        return None

    def unblock(self, wid: str) -> None:
        """The webhook may be free again: its queue competes once more."""
        if wid in self._blocked:
            self._blocked.discard(wid)
            queue = self._queues.get(wid)
            if queue:
                heapq.heappush(self._heap, (queue[0][0], wid))

    def remove(self, which: Callable[[J], bool]) -> list[J]:
        """Takes every queued job `which` selects out of the queues; returns them."""
        taken: list[J] = []
        for wid, queue in list(self._queues.items()):
            kept: deque[tuple[Order, J]] = deque()
            for entry in queue:
                if which(entry[1]):
                    taken.append(entry[1])
                else:
                    kept.append(entry)
            if kept:
                self._queues[wid] = kept
            else:
                del self._queues[wid]
        self._len -= len(taken)
        # Heads changed: the heap is rebuilt (a rebalance's cost, not a request's).
        self._blocked &= self._queues.keys()
        self._heap = [(q[0][0], w) for w, q in self._queues.items() if w not in self._blocked]
        heapq.heapify(self._heap)
        return taken
