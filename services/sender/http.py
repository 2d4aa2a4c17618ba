"""The sender's HTTP client: keep-alive pooled POSTs to the addresses the SSRF guard
checked, with the attempt's outcome classified into Hookline's error classes.

A lean HTTP/1.1 client on asyncio protocols (aiohttp's general-purpose client costs about
three times the CPU per POST): one pool of keep-alive connections per (scheme, host,
port) (`pool`), each request written in one `transport.write`, the response parsed by
aiohttp's C parser (llhttp), at most 16 KiB of its body read (`wire`). The host is
resolved and checked by `shared.netguard.PinnedResolver` and only a checked address is
connected to, while the Host header and TLS SNI keep the host name. Redirects are never
followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

import structlog

from shared.core.attempts import (
    AttemptResult,
    clean_headers,
    clean_text,
    cut_headers,
    cut_text,
)
from shared.core.errors import BlockedTarget, HooklineError, ResolveFailed, ValidationError
from shared.core.ssrf import Allowlist
from shared.netguard import Pinned, PinnedResolver

from .pool import KEEPALIVE_S, MAX_IDLE_TOTAL, ConnectionPool
from .wire import BadResponse, Disconnected, Target, encode, read_cut

log = structlog.get_logger(component="sender")


class ClientClosed(HooklineError):
    """The client was closed (shutdown); no request was made: retried elsewhere."""

    code = "client_closed"
    retryable = True


class WebhookClient:
    """POSTs deliveries; one instance (one connection pool) per sender process."""

    def __init__(
        self,
        allow: Allowlist,
        *,
        concurrency: int,
        max_request_bytes: int,
        bounded: bool = True,
        keepalive_s: float = KEEPALIVE_S,
        max_idle_total: int = MAX_IDLE_TOTAL,
        tls: ssl.SSLContext | None = None,
        resolver: PinnedResolver | None = None,
    ) -> None:
        """`concurrency` bounds the requests in flight (and the idle connections kept per
        host); `bounded=False` leaves the bound to a caller that already enforces it.
        `tls` is the context HTTPS is verified with (the system's by default);
        `resolver` looks hosts up and checks them (tests pass one with a fake lookup)."""
        self._resolver = resolver if resolver is not None else PinnedResolver(allow)
        self._max_request_bytes = max_request_bytes
        self._slots: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Semaphore(concurrency) if bounded else contextlib.nullcontext()
        )
        self.pool = ConnectionPool(
            max_idle=concurrency, max_idle_total=max_idle_total, keepalive_s=keepalive_s, tls=tls
        )
        self._targets: dict[str, Target] = {}
        self._started = False

    async def start(self) -> None:
        await self.pool.start()
        self._started = True

    async def close(self) -> None:
        self._started = False
        await self.pool.close()

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float
    ) -> AttemptResult:
        """One attempt; never raises for anything the endpoint or network does."""
        if not self._started:
            # Closed at shutdown while work was queued: an outage for the caller (the
            # message stays uncommitted and is redelivered), not an attempt's outcome.
            raise ClientClosed("the HTTP client is closed")
        started = time.perf_counter()

        def done(error: str | None, **kw: Any) -> AttemptResult:
            ms = (time.perf_counter() - started) * 1000
            return AttemptResult(error=error, duration_ms=round(ms, 3), **kw)

        if len(body) > self._max_request_bytes:
            return done("too_large", status=None)
        resolved: str | None = None
        try:
            # Parsed as creation parsed it; a URL stored before that check tightened is
            # a host that cannot be looked up.
            target = self._target(url)
        except ValidationError:
            return done("dns", status=None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            # The lookup has a bound of its own: a host that never answers is this
            # webhook's `dns` failure, not a `timeout` (nor a wait for anyone else).
            pinned = await self._resolver.check(target.host, target.port, timeout=timeout_s)
            resolved = str(pinned.addresses[0])
            async with asyncio.timeout_at(deadline):
                data = encode(target, headers, body)
                async with self._slots:
                    status, rheaders, raw, resolved = await self._exchange(target, pinned, data)
        except BlockedTarget:
            return done("blocked", status=None)
        except ResolveFailed:
            return done("dns", status=None)
        except TimeoutError:
            return done("timeout", status=None, resolved_ip=resolved)
        except ssl.SSLError:
            return done("tls", status=None, resolved_ip=resolved)
        except (OSError, Disconnected, BadResponse):
            return done("connect", status=None, resolved_ip=resolved)
        except Exception:
            # A bug or an input nothing above foresaw: still a failed attempt, logged
            # and retried per the schedule, never a delivery lost or a partition stuck.
            log.exception("attempt raised; counted as a connect failure")
            return done("connect", status=None, resolved_ip=resolved)
        ok = 200 <= status < 300
        return done(
            None if ok else "http_status",
            status=status,
            headers=rheaders,
            body=clean_text(cut_text(raw)),
            resolved_ip=resolved,
        )

    async def _exchange(
        self, target: Target, pinned: Pinned, data: bytes
    ) -> tuple[int, dict[str, str], bytes, str]:
        """Sends the request and reads the response: (status, headers, body cut, peer)."""
        conn = self.pool.reuse(target.key, pinned)
        reused = conn is not None
        if conn is None:
            conn = await self.pool.connect(target, pinned)
        keep = False
        try:
            try:
                msg, payload = await conn.request(data)
            except Disconnected:
                if not (reused and not conn.got_data):
                    raise
                # The endpoint closed an idle keep-alive connection as the request went
                # out (no byte of an answer came back): send it once on a new one.
                self.pool.release(target.key, conn, keep=False)
                conn = await self.pool.connect(target, pinned)
                msg, payload = await conn.request(data)
            raw = await read_cut(payload)
            # Reused only when the whole response was read and both ends keep it open.
            keep = payload.at_eof() and not msg.should_close and not msg.upgrade
            # Whatever the endpoint sent must stay storable (no NUL, no surrogate-escaped
            # bytes): the log writer cannot skip a row.
            return msg.code, cut_headers(clean_headers(msg.headers)), raw, conn.ip
        finally:
            self.pool.release(target.key, conn, keep=keep)

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 10_000:
                self._targets.clear()
            target = self._targets[url] = Target.of(url)
        return target
