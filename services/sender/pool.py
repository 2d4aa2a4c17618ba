"""The sender's idle keep-alive connections: one stack per (scheme, host, port), reused
only to an address the resolver still vouches for, closed after KEEPALIVE_S idle, at most
`max_idle` per endpoint and `max_idle_total` in all (the least recently used go first)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import OrderedDict

import aiohappyeyeballs

from shared.netguard import Pinned

from .wire import Connection, Target

# An idle keep-alive connection is closed after this long.
KEEPALIVE_S = 30.0
MAX_IDLE_TOTAL = 512
HAPPY_EYEBALLS_DELAY_S = 0.25


class ConnectionPool:
    """Opens connections to checked addresses and keeps up to `max_idle` idle ones per
    host, and `max_idle_total` in all, for reuse."""

    def __init__(
        self,
        *,
        max_idle: int,
        max_idle_total: int = MAX_IDLE_TOTAL,
        keepalive_s: float = KEEPALIVE_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._max_idle = max_idle
        self._max_idle_total = max_idle_total
        self._keepalive_s = keepalive_s
        self._tls = tls
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        # Every idle connection, least recently used first (the global cap's order).
        self._lru: OrderedDict[Connection, tuple[str, str, int]] = OrderedDict()
        self._busy: set[Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._open = False

    async def start(self) -> None:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="http-idle-sweeper")
        self._open = True

    async def close(self) -> None:
        self._open = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
        self._lru.clear()
        for conn in list(self._busy):
            conn.close()

    def idle(self) -> list[Connection]:
        """The idle connections kept (for tests and metrics)."""
        return [conn for stack in self._idle.values() for conn in stack]

    def reuse(self, key: tuple[str, str, int], pinned: Pinned) -> Connection | None:
        """An idle connection to one of the checked addresses, now busy; None if none."""
        stack = self._idle.get(key)
        deadline = time.monotonic() - self._keepalive_s
        while stack:
            conn = stack.pop()  # the most recently used is the least likely closed
            self._lru.pop(conn, None)
            if not conn.closed and conn.idle_since > deadline and conn.ip in pinned.ips:
                self._busy.add(conn)
                return conn
            conn.close()
        return None

    async def connect(self, target: Target, pinned: Pinned) -> Connection:
        """A new connection (happy eyeballs over the checked addresses), busy."""
        loop = asyncio.get_running_loop()
        infos = [
            (socket.AF_INET6, socket.SOCK_STREAM, 0, "", (str(a), target.port, 0, 0))
            if a.version == 6
            else (socket.AF_INET, socket.SOCK_STREAM, 0, "", (str(a), target.port))
            for a in pinned.addresses
        ]
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S, interleave=1
        )
        ip = str(sock.getpeername()[0])
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(loop, ip),
                sock=sock,
                ssl=self._tls if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        except BaseException:
            sock.close()
            raise
        self._busy.add(conn)
        return conn

    def release(self, key: tuple[str, str, int], conn: Connection, *, keep: bool) -> None:
        """A request on `conn` is over: kept idle for reuse if `keep` and still open,
        else closed."""
        self._busy.discard(conn)
        if not (keep and not conn.closed and self._open):
            conn.close()
            return
        conn.waiter = None
        conn.payload = None
        conn.idle_since = time.monotonic()
        stack = self._idle.setdefault(key, [])
        stack.append(conn)
        self._lru[conn] = key
        if len(stack) > self._max_idle:
            self._drop(stack[0])
        while len(self._lru) > self._max_idle_total:
            self._drop(next(iter(self._lru)))

    def _drop(self, conn: Connection) -> None:
        """Closes an idle connection and forgets it."""
        key = self._lru.pop(conn, None)
        conn.close()
        stack = self._idle.get(key) if key is not None else None
        if stack is not None:
            with contextlib.suppress(ValueError):
                stack.remove(conn)
            if not stack:
                del self._idle[key]  # type: ignore[arg-type]

    async def _sweep_forever(self) -> None:
        """Closes keep-alive connections idle for longer than the keep-alive time."""
        while True:
            await asyncio.sleep(self._keepalive_s / 3)
            deadline = time.monotonic() - self._keepalive_s
            for key, stack in list(self._idle.items()):
                for conn in stack:
                    if conn.idle_since <= deadline:
                        conn.close()
                fresh = [conn for conn in stack if not conn.closed]
                for conn in stack:
                    if conn.closed:
                        self._lru.pop(conn, None)
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
