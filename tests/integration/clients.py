"""Clients a test starts and must stop (aiokafka's producers and consumers, a WebhookTable)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar


class Startable(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


C = TypeVar("C", bound=Startable)


@asynccontextmanager
async def started(client: C) -> AsyncIterator[C]:
    """`client`, started; stopped on the way out."""
    await client.start()
    try:
        yield client
    finally:
        await client.stop()
