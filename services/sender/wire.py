"""HTTP/1.1 on the wire: one connection as an asyncio protocol whose responses aiohttp's
C parser (llhttp, from the public `aiohttp.http`) reads, the bytes of a request, and a
response body read up to the cut."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import StreamReader
from aiohttp.http import SERVER_SOFTWARE, HttpResponseParser

from shared.core.attempts import BODY_CUT
from shared.core.errors import HooklineError
from shared.core.ssrf import validate_url

# Read-buffer limit of one response (flow control pauses the socket above twice this).
READ_LIMIT = 2**16
# What a transport without flow control raises when asked to pause or resume reading.
_NO_FLOW_CONTROL = (AttributeError, NotImplementedError, RuntimeError)


class Disconnected(HooklineError):
    """The connection closed before a whole response arrived (error class `connect`)."""

    code = "connect"


class BadResponse(HooklineError):
    """What the endpoint sent is not HTTP/1.x the parser accepts (error class `connect`)."""

    code = "connect"


@dataclass(frozen=True)
class Target:
    """Where a webhook URL's requests go, and the start of each request's head."""

    key: tuple[str, str, int]  # scheme, host, port: one pool
    host: str
    port: int
    tls: bool
    head: str  # "POST <path> HTTP/1.1\r\nHost: <host[:port]>\r\n"

    @classmethod
    def of(cls, url: str) -> Target:
        """Parsed as creation parsed it (`validate_url`); ValidationError if invalid."""
        parsed = validate_url(url)
        return cls(
            key=(parsed.scheme, parsed.host, parsed.port),
            host=parsed.host,
            port=parsed.port,
            tls=parsed.scheme == "https",
            head=f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n",
        )


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request at a time, the response fed to llhttp. It is
    also the protocol the parser's body readers pause and resume (flow control)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ip: str) -> None:
        self._loop = loop
        # The parser's body readers use only the flow-control half of aiohttp's
        # BaseProtocol (connected, pause_reading, resume_reading), which this provides.
        self._http = HttpResponseParser(
            cast(Any, self),
            loop,
            READ_LIMIT,
            response_with_body=True,
            read_until_eof=True,
            auto_decompress=False,
        )
        self.transport: asyncio.Transport | None = None
        self._reading_paused = False
        self.ip = ip
        self.closed = False
        self.got_data = False  # a byte of the current response has arrived
        self.idle_since = 0.0
        self.waiter: asyncio.Future[tuple[Any, StreamReader]] | None = None
        self.payload: StreamReader | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip = str(peer[0])

    def request(self, data: bytes) -> asyncio.Future[tuple[Any, StreamReader]]:
        """Writes a request; the future holds the response's head and body reader."""
        if self.transport is None:
            raise Disconnected("connection closed")
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
            self._fail(BadResponse(f"{type(exc).__name__}: {exc}"))
            return
        for msg, payload in messages:
            if 100 <= msg.code < 200 and msg.code != 101:
                continue  # informational: the final answer follows
            waiter = self.waiter
            if waiter is None or waiter.done():
                self._fail(BadResponse("response nobody asked for"))
                return
            self.payload = payload
            waiter.set_result((msg, payload))

    def pause_reading(self) -> None:
        """A body reader's buffer is full: stop parsing and reading until it drains."""
        self._reading_paused = True
        self._http.pause_reading()
        if self.transport is not None:
            try:
                self.transport.pause_reading()
            except _NO_FLOW_CONTROL:
                pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if resume_parser:
            self.data_received(b"")  # parses what was held back while paused
        if not self._reading_paused and self.transport is not None:
            try:
                self.transport.resume_reading()
            except _NO_FLOW_CONTROL:
                pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        error = Disconnected("connection closed")
        try:
            self._http.feed_eof()  # completes a body that runs until the close
        except Exception as eof_exc:  # a cut body: the reader sees it
            error = Disconnected(str(eof_exc))
        self._error(error)
        self.transport = None

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


_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "host"))
# Control characters a header may not hold besides CR and LF (tab is allowed: RFC 9110).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def encode(target: Target, headers: dict[str, str], body: bytes) -> bytes:
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


async def read_cut(payload: StreamReader) -> bytes:
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
