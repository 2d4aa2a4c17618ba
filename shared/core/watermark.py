"""Contiguous-offset watermark of one Kafka partition, for out-of-order completion.

Many deliveries of a partition are in flight at once and finish in any order; the offset
committed is only ever the one below which every dispatched message is complete, so a
crash redelivers the unfinished ones (at-least-once) and never skips one.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Watermark"]


class Watermark:
    """Tracks dispatched offsets (increasing) and which of them are complete.

    ``committable()`` is the Kafka commit position: one past the highest offset below
    which every dispatched offset is complete, or None when nothing new is complete.
    Offsets need not be consecutive (compaction and control records leave gaps).
    """

    def __init__(self) -> None:
        self._dispatched: deque[int] = deque()
        self._done: set[int] = set()
        self._position: int | None = None  # one past the last contiguous completed offset
        self._committed: int | None = None

    def __len__(self) -> int:
        """Offsets dispatched and not yet below the watermark."""
        return len(self._dispatched)

    @property
    def position(self) -> int | None:
        return self._position

    def dispatch(self, offset: int) -> None:
        """Records that ``offset`` is being processed; offsets arrive in increasing order."""
        if self._dispatched and offset <= self._dispatched[-1]:
            raise ValueError(f"offset {offset} dispatched after {self._dispatched[-1]}")
        if self._position is not None and offset < self._position:
            raise ValueError(f"offset {offset} is below the watermark {self._position}")
        self._dispatched.append(offset)

    def complete(self, offset: int) -> None:
        """Marks a dispatched offset complete and advances the watermark if it can (an
        offset already below the watermark is ignored: completing twice is harmless)."""
        if self._position is not None and offset < self._position:
            return
        self._done.add(offset)
        while self._dispatched and self._dispatched[0] in self._done:
            head = self._dispatched.popleft()
            self._done.discard(head)
            self._position = head + 1

    def committable(self) -> int | None:
        """The position to commit if it moved since the last ``committed()``, else None."""
        if self._position is None or self._position == self._committed:
            return None
        return self._position

    def committed(self, position: int) -> None:
        """Records that ``position`` was committed."""
        self._committed = position

    @property
    def idle(self) -> bool:
        """True when nothing dispatched is still unfinished."""
        return not self._dispatched
