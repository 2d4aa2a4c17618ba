"""Process lifecycle shared by every service: uvloop, signals, a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from shared.config import ConfigError, Settings


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second signal exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


def run(main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Reads settings (exiting with the bad variable's name), then runs `main` on uvloop
    until it returns; `main` watches the stop event and shuts down gracefully."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")

    async def entry() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await main(settings, stop)

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(entry())
        else:
            uvloop.run(entry())
    except ConfigError as exc:  # a setting this service needs (settings.require)
        sys.exit(f"configuration error: {exc}")


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps `seconds`, or less if `stop` is set meanwhile; True if it was."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


class Backoff:
    """Doubling waits from `first` up to `cap` seconds, cut short by `stop`."""

    def __init__(self, stop: asyncio.Event, first: float = 0.2, cap: float = 10.0) -> None:
        self._stop = stop
        self._next = first
        self._cap = cap

    async def sleep(self) -> None:
        await sleep_or_stop(self._stop, self._next)
        self._next = min(self._next * 2, self._cap)
