"""Process lifecycle shared by every service: uvloop, signals, a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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


# The cyclic collector's first generation is collected after this many net allocations of
# container objects (CPython's default is 700). A request body of 500 events parses into
# some 20,000 dicts and lists, which at 700 ran dozens of collections, a few of them over
# the whole heap, inside one `orjson.loads`: 11.4 ms instead of 2.8 without a collection.
# With the start-up heap frozen and this threshold it took 2.9.
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc() -> None:
    """Moves what start-up made (modules, classes, settings) out of the collector's sight
    (`gc.freeze`) and collects the young generation less often. Cycles are still collected;
    a process's garbage waits a little longer for it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run(main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Reads settings (exiting with the bad variable's name), then runs `main` on uvloop
    until it returns; `main` watches the stop event and shuts down gracefully."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    metrics.configure(enabled=settings.metrics)
    tune_gc()

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
