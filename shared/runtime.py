"""Process lifecycle shared by every service: uvloop, signals, a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from shared import metrics
from shared.config import ConfigError, Settings
from shared.health import health_server


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
    metrics.configure(enabled=settings.metrics)

    async def entry() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        async with health_server(settings):
            await drain_within(main(settings, stop), stop, settings.shutdown_grace_s)

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


async def drain_within(work: Awaitable[None], stop: asyncio.Event, grace_s: float) -> None:
    """Runs `work`; once `stop` is set it gets `grace_s` to finish, then the process exits
    (status 1) rather than be killed mid-write by the orchestrator."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                print(
                    f"[hookline] not drained within {grace_s}s of the stop signal; exiting",
                    file=sys.stderr,
                )
                os._exit(1)
        await task
    finally:
        stopping.cancel()
