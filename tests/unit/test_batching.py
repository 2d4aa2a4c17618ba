"""Micro-batching: results go back to the right callers, failures to every caller of the
batch, and a batch waits for nothing when it is alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from shared.batching import Batcher, SessionBatcher


async def test_concurrent_submits_share_batches_and_get_their_own_results() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20


async def test_a_failed_batch_fails_its_callers_only() -> None:
    calls = 0

    async def flush(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if "bad" in items:
            raise RuntimeError("database down")
        return list(items)

    batcher: Batcher[str, str] = Batcher(flush)
    first = asyncio.gather(batcher.submit("a"), batcher.submit("bad"), return_exceptions=True)
    assert [type(r) for r in await first] == [RuntimeError, RuntimeError]
    assert await batcher.submit("c") == "c"  # the worker lives on
    with pytest.raises(RuntimeError):
        await batcher.submit("bad")


async def test_at_most_in_flight_batches_are_out_at_once() -> None:
    out = peak = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal out, peak
        out += 1
        peak = max(peak, out)
        await asyncio.sleep(0.01)
        out -= 1
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=2, in_flight=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(30))) == list(range(30))
    assert peak == 3
    # A submit after every worker finished still gets a worker.
    assert await batcher.submit(99) == 99


async def test_submit_many_answers_each_item_in_order_across_batches() -> None:
    seen: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=4, in_flight=2)
    one = asyncio.create_task(batcher.submit(100))
    many = await batcher.submit_many(list(range(9)))
    assert many == [i * 10 for i in range(9)]
    assert await one == 1000
    assert sorted(x for batch in seen for x in batch) == sorted([100, *range(9)])
    assert max(len(batch) for batch in seen) <= 4
    await batcher.close()


async def test_a_batch_failing_on_one_items_value_is_split_so_only_that_caller_fails() -> None:
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        if 13 in items:
            raise ValueError("13 cannot be stored")
        if -1 in items:
            raise RuntimeError("the database is down")
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, split_on=(ValueError,))
    results = await asyncio.gather(
        *(batcher.submit(i) for i in (11, 12, 13, 14)), return_exceptions=True
    )
    assert results[:2] == [110, 120] and results[3] == 140
    assert isinstance(results[2], ValueError)
    # 13 shared a batch with others, which were then flushed again one at a time.
    assert any(len(batch) > 1 and 13 in batch for batch in flushed)
    assert [13] in flushed and [14] in flushed
    # An error not in split_on fails the whole batch, without a retry per item.
    flushed.clear()
    with pytest.raises(RuntimeError):
        await batcher.submit_many([-1, 2])
    assert flushed == [[-1, 2]]


class Sessions:
    """Sessions (numbered) as a pool's acquire gives connections; `refuse` makes the next
    openings fail."""

    def __init__(self) -> None:
        self.opened = 0
        self.open_now = 0
        self.refuse = 0

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[int]:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError("no connection")
        self.opened += 1
        self.open_now += 1
        try:
            yield self.opened
        finally:
            self.open_now -= 1


async def test_a_session_worker_holds_one_session_for_its_run_of_batches() -> None:
    sessions = Sessions()
    used: list[tuple[int, list[int]]] = []

    async def flush(session: int, items: Sequence[int]) -> list[int]:
        used.append((session, list(items)))
        await asyncio.sleep(0.001)
        return [i * 10 for i in items]

    batcher: SessionBatcher[int, int, int] = SessionBatcher(sessions.open, flush, max_batch=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [
        i * 10 for i in range(10)
    ]
    assert len(used) == 4  # 10 items in batches of 3
    assert sessions.opened == 1 and {s for s, _ in used} == {1}
    assert sessions.open_now == 0  # closed once the queue was empty
    assert await batcher.submit(7) == 70  # the next run opens a session of its own
    assert sessions.opened == 2 and sessions.open_now == 0


async def test_a_batch_failing_as_a_whole_ends_its_session() -> None:
    sessions = Sessions()
    used: list[tuple[int, list[int]]] = []

    async def flush(session: int, items: Sequence[int]) -> list[int]:
        used.append((session, list(items)))
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("13 cannot be stored")
        if -1 in items:
            raise ConnectionResetError("the connection broke")
        return list(items)

    batcher: SessionBatcher[int, int, int] = SessionBatcher(
        sessions.open, flush, max_batch=2, split_on=(ValueError,)
    )
    results = await asyncio.gather(
        *(batcher.submit(i) for i in (1, -1, 2, 13, 4, 5)), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == [
        "ConnectionResetError", "ConnectionResetError", "int", "ValueError", "int", "int"
    ]  # fmt: skip
    # [1, -1] failed on session 1, which ended; the rest ran on session 2, where the
    # batch holding 13 was split on that same session.
    assert [s for s, _ in used] == [1, 2, 2, 2, 2]
    assert used[1:] == [(2, [2, 13]), (2, [2]), (2, [13]), (2, [4, 5])]


async def test_when_no_session_opens_the_next_batch_fails_with_the_reason() -> None:
    sessions = Sessions()
    sessions.refuse = 1

    async def flush(session: int, items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        return [session] * len(items)

    batcher: SessionBatcher[int, int, int] = SessionBatcher(sessions.open, flush, max_batch=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert [type(r).__name__ for r in results[:2]] == ["ConnectionRefusedError"] * 2
    assert results[2:] == [1, 1]  # the next batch opened one, and the queue drained
    await batcher.close()
    assert sessions.open_now == 0
