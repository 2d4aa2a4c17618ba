"""Clients a test starts and must stop (aiokafka's producers and consumers, a WebhookTable,
a DeliveryLog)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar


class Starts(Protocol):
    async def start(self) -> Any: ...


class Startable(Starts, Protocol):
    async def stop(self) -> Any: ...


S = TypeVar("S", bound=Starts)
C = TypeVar("C", bound=Startable)


@asynccontextmanager
async def running(client: S, stop: Callable[[], Awaitable[Any]]) -> AsyncIterator[S]:
    """`client`, started; `stop` called on the way out."""
    await client.start()
    try:
        yield client
    finally:
        await stop()


def started(client: C) -> AbstractAsyncContextManager[C]:
    """`client`, started; stopped on the way out."""
    return running(client, client.stop)
