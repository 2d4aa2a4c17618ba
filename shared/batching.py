"""Micro-batching: many concurrent callers, one database round trip.

Each `submit` waits for the batch its item lands in. A batch is sent as soon as one of
the `in_flight` before it came back, so under light load an item waits for nothing, and
under heavy load every round trip (and every commit's WAL flush) serves everyone who
arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs `flush(items)` (which returns one result per item, in order) over batches of
    at most `max_batch` submitted items, one batch at a time per batcher.

    A batch failing with one of `split_on` (an error of one item's values, such as a value
    the database refuses, which fails the whole statement) is flushed again one item at a
    time, so only the callers whose items fail get the error."""

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 256,
        in_flight: int = 1,
        split_on: tuple[type[Exception], ...] = (),
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._in_flight = in_flight  # batches out at once (each waits a round trip)
        self._split_on = split_on
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if len(self._workers) < self._in_flight:
            self._workers.add(asyncio.create_task(self._drain()))
        return await future

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """`submit` for each of `items` at once (in order), without a task each."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._items.extend(zip(items, futures, strict=True))
        while self._items and len(self._workers) < self._in_flight:
            self._workers.add(asyncio.create_task(self._drain()))
        # Every future is awaited, so that a failed batch's exception is retrieved on each
        # (not left to be logged as never retrieved); the first one is raised.
        done = await asyncio.gather(*futures, return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        return list(done)  # type: ignore[arg-type]

    async def _drain(self) -> None:
        try:
            await self._drain_items()
        finally:
            # Leave the set before returning (no await in between): a submit that comes
            # after the last look at the queue must see room for a new worker.
            self._workers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain_items(self) -> None:
        while self._items:
            batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
            try:
                results = await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.cancel()
                raise
            except Exception as exc:
                if len(batch) > 1 and isinstance(exc, self._split_on):
                    await self._one_by_one(batch)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for n, (item, future) in enumerate(batch):
            try:
                (result,) = await self._flush([item])
            except asyncio.CancelledError:
                for _, left in batch[n:]:
                    left.cancel()
                raise
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Waits for what was submitted."""
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
