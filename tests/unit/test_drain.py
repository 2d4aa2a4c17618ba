"""drain_within: work that finishes after the stop signal, within the grace, is awaited."""

from __future__ import annotations

import asyncio

from shared.runtime import drain_within


async def test_work_that_drains_within_the_grace_finishes() -> None:
    stop = asyncio.Event()
    drained: list[bool] = []

    async def work() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # the drain
        drained.append(True)

    asyncio.get_running_loop().call_later(0.05, stop.set)
    await drain_within(work(), stop, grace_s=5)
    assert drained == [True]


async def test_work_that_ends_on_its_own_returns_without_a_stop() -> None:
    stop = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.01)

    await drain_within(work(), stop, grace_s=5)
    assert not stop.is_set()
