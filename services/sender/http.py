"""The sender's HTTP client: keep-alive pooled POSTs to the addresses the SSRF guard
checked, with the attempt's outcome classified into Hookline's error classes.

A lean HTTP/1.1 client on asyncio protocols (aiohttp's general-purpose client costs about
three times the CPU per POST): one pool of keep-alive connections per (scheme, host,
port), each request written in one `transport.write`, the response parsed by aiohttp's C
parser (llhttp), at most 16 KiB of its body read. The host is resolved and checked by
`shared.netguard` (cached for RESOLVE_TTL_S) and only a checked address is connected to,
while the Host header and TLS SNI keep the host name. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohappyeyeballs
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import HttpResponseParser
from aiohttp.streams import StreamReader
from yarl import URL

from shared.core.attempts import BODY_CUT, AttemptResult, clean_headers, clean_text, cut_text
from shared.core.errors import BlockedTarget, HooklineError, ResolveFailed
from shared.core.ssrf import Address, Allowlist
from shared.netguard import checked_addresses

# A checked resolution is reused for this long (the hot path stays free of lookups).
RESOLVE_TTL_S = 30.0
# An idle keep-alive connection is closed after this long.
KEEPALIVE_S = 30.0
# Read-buffer limit of one response (flow control pauses the socket above twice this).
READ_LIMIT = 2**16
HAPPY_EYEBALLS_DELAY_S = 0.25


class ClientClosed(HooklineError):
    """The client was closed (shutdown); no request was made: retried elsewhere."""

    code = "client_closed"
    retryable = True


class _Disconnected(HooklineError):
    """The connection closed before a whole response arrived (error class `connect`)."""

    code = "connect"


class _BadResponse(HooklineError):
    """What the endpoint sent is not HTTP/1.x the parser accepts (error class `connect`)."""

    code = "connect"


@dataclass
class _Pinned:
    addresses: list[Address]
    ips: frozenset[str]
    expires: float


@dataclass(frozen=True)
class _Target:
    key: tuple[str, str, int]  # scheme, host, port: one pool
    host: str
    port: int
    tls: bool
    head: str  # "POST <path> HTTP/1.1\r\nHost: <host[:port]>\r\n"


class _Guard:
    """Resolves and SSRF-checks hosts, caching a checked answer for the TTL."""

    def __init__(self, allow: Allowlist, ttl: float = RESOLVE_TTL_S) -> None:
        self._allow = allow
        self._ttl = ttl
        self._pinned: dict[str, _Pinned] = {}

    async def check(self, host: str, port: int) -> _Pinned:
        """Raises BlockedTarget or ResolveFailed."""
        now = time.monotonic()
        held = self._pinned.get(host)
        if held is not None and held.expires > now:
            return held
        addresses = await checked_addresses(host, port, self._allow)
        held = _Pinned(addresses, frozenset(str(a) for a in addresses), now + self._ttl)
        self._pinned[host] = held
        if len(self._pinned) > 10_000:
            self._pinned = {h: p for h, p in self._pinned.items() if p.expires > now}
        return held


class _Conn(BaseProtocol):
    """One HTTP/1.1 connection: a request at a time, the response fed to llhttp."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ip: str) -> None:
        super().__init__(loop)
        self._http = HttpResponseParser(
            self,
            loop,
            READ_LIMIT,
            response_with_body=True,
            read_until_eof=True,
            auto_decompress=False,
        )
        self._parser = self._http  # BaseProtocol's flow control pauses it
        self.ip = ip
        self.closed = False
        self.got_data = False  # a byte of the current response has arrived
        self.idle_since = 0.0
        self.waiter: asyncio.Future[tuple[Any, StreamReader]] | None = None
        self.payload: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip = str(peer[0])

    def request(self, data: bytes) -> asyncio.Future[tuple[Any, StreamReader]]:
        assert self.transport is not None
        self.got_data = False
        self.payload = None
        self.waiter = self._loop.create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if data:  # b"" is resume_reading() asking the parser to go on with what it held
            self.got_data = True
        try:
            messages, _upgraded, _tail = self._http.feed_data(data)
        except Exception as exc:  # any parse error ends this connection
            self._fail(_BadResponse(f"{type(exc).__name__}: {exc}"))
            return
        for msg, payload in messages:
            if 100 <= msg.code < 200 and msg.code != 101:
                continue  # informational: the final answer follows
            waiter = self.waiter
            if waiter is None or waiter.done():
                self._fail(_BadResponse("response nobody asked for"))
                return
            self.payload = payload
            waiter.set_result((msg, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        error = _Disconnected("connection closed")
        try:
            self._http.feed_eof()  # completes a body that runs until the close
        except Exception as eof_exc:  # a cut body: the reader sees it
            error = _Disconnected(str(eof_exc))
        self._error(error)
        super().connection_lost(exc)

    def _fail(self, exc: Exception) -> None:
        self._error(exc)
        self.close()

    def _error(self, exc: Exception) -> None:
        if self.payload is not None and not self.payload.is_eof():
            self.payload.set_exception(exc)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class WebhookClient:
    """POSTs deliveries; one instance (one connection pool) per sender process."""

    def __init__(
        self,
        allow: Allowlist,
        *,
        concurrency: int,
        max_request_bytes: int,
        bounded: bool = True,
    ) -> None:
        """`concurrency` bounds the requests in flight (and the idle connections kept per
        host); `bounded=False` leaves the bound to a caller that already enforces it."""
        self._guard = _Guard(allow)
        self._max_request_bytes = max_request_bytes
        self._concurrency = concurrency
        self._slots: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Semaphore(concurrency) if bounded else contextlib.nullcontext()
        )
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        self._tls = ssl.create_default_context()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="http-idle-sweeper")
        self._started = True

    async def close(self) -> None:
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()

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
        target = self._targets.get(url) or self._target(url)
        resolved: str | None = None
        try:
            async with asyncio.timeout(timeout_s):
                pinned = await self._guard.check(target.host, target.port)
                resolved = str(pinned.addresses[0])
                if target.key[0] not in ("http", "https"):
                    return done("connect", status=None, resolved_ip=resolved)
                data = _encode(target, headers, body)
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
        except (OSError, _Disconnected, _BadResponse):
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
        self, target: _Target, pinned: _Pinned, data: bytes
    ) -> tuple[int, dict[str, str], bytes, str]:
        """Sends the request and reads the response: (status, headers, body cut, peer)."""
        conn = self._reuse(target.key, pinned)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(target, pinned)
        self._busy.add(conn)
        keep = False
        try:
            try:
                msg, payload = await conn.request(data)
            except _Disconnected:
                if not (reused and not conn.got_data):
                    raise
                # The endpoint closed an idle keep-alive connection as the request went
                # out (no byte of an answer came back): send it once on a new one.
                conn.close()
                self._busy.discard(conn)
                conn = await self._connect(target, pinned)
                self._busy.add(conn)
                msg, payload = await conn.request(data)
            raw = await _read_cut(payload)
            # Reused only when the whole response was read and both ends keep it open.
            keep = payload.at_eof() and not msg.should_close and not msg.upgrade
            # Whatever the endpoint sent must stay storable (no NUL, no surrogate-escaped
            # bytes): the log writer cannot skip a row.
            return msg.code, clean_headers(msg.headers), raw, conn.ip
        finally:
            self._busy.discard(conn)
            if keep and not conn.closed and self._started:
                conn.waiter = None
                conn.payload = None
                conn.idle_since = time.monotonic()
                stack = self._idle.setdefault(target.key, [])
                stack.append(conn)
                if len(stack) > self._concurrency:
                    stack.pop(0).close()
            else:
                conn.close()

    def _reuse(self, key: tuple[str, str, int], pinned: _Pinned) -> _Conn | None:
        stack = self._idle.get(key)
        if not stack:
            return None
        deadline = time.monotonic() - KEEPALIVE_S
        while stack:
            conn = stack.pop()  # the most recently used is the least likely closed
            if not conn.closed and conn.idle_since > deadline and conn.ip in pinned.ips:
                return conn
            conn.close()
        return None

    async def _connect(self, target: _Target, pinned: _Pinned) -> _Conn:
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
                lambda: _Conn(loop, ip),
                sock=sock,
                ssl=self._tls if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        except BaseException:
            sock.close()
            raise
        return conn

    def _target(self, url: str) -> _Target:
        parsed = URL(url)
        scheme = parsed.scheme
        host = parsed.raw_host or ""
        port = parsed.port or (443 if scheme == "https" else 80)
        netloc = f"[{host}]" if ":" in host else host
        if parsed.port is not None and not parsed.is_default_port():
            netloc = f"{netloc}:{parsed.port}"
        path = parsed.raw_path_qs or "/"
        target = _Target(
            key=(scheme, host, port),
            host=host,
            port=port,
            tls=scheme == "https",
            head=f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\n",
        )
        if len(self._targets) >= 10_000:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _sweep_forever(self) -> None:
        """Closes keep-alive connections idle for longer than KEEPALIVE_S."""
        while True:
            await asyncio.sleep(KEEPALIVE_S / 3)
            deadline = time.monotonic() - KEEPALIVE_S
            for key, stack in list(self._idle.items()):
                for conn in stack:
                    if conn.idle_since <= deadline:
                        conn.close()
                fresh = [conn for conn in stack if not conn.closed]
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]


_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "host"))
# Control characters a header may not hold besides CR and LF (tab is allowed: RFC 9110).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _encode(target: _Target, headers: dict[str, str], body: bytes) -> bytes:
    """The request's bytes: what aiohttp would send (Accept, and a User-Agent and a
    Content-Type when the caller gave none), minus Accept-Encoding. A header holding a
    control character is refused (ValueError), as aiohttp refuses it."""
    lines = [target.head]
    seen = {name.lower() for name in headers}
    if seen.isdisjoint(_FRAMING):
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    else:  # framing and routing are the client's to set
        lines += [f"{n}: {v}\r\n" for n, v in headers.items() if n.lower() not in _FRAMING]
    if "accept" not in seen:
        lines.append("Accept: */*\r\n")
    if "user-agent" not in seen:
        lines.append(f"User-Agent: {SERVER_SOFTWARE}\r\n")
    if "content-type" not in seen:
        lines.append("Content-Type: application/octet-stream\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    head = "".join(lines)
    # Every line ends in exactly one CRLF (the first and last parts hold two): any other
    # CR or LF came from a header name or value.
    crlf = len(lines) + 2
    if head.count("\n") != crlf or head.count("\r") != crlf or _CONTROL.search(head):
        raise ValueError("control character in an HTTP header")
    return head.encode("utf-8", "surrogateescape") + body


async def _read_cut(payload: StreamReader) -> bytes:
    """At most BODY_CUT bytes of the response; a longer body is not drained (the
    connection is then closed rather than reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < BODY_CUT:
        chunk = await payload.read(BODY_CUT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
