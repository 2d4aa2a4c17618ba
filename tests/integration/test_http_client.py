"""The sender's HTTP client against real local servers that misbehave on purpose.

A raw asyncio server answers each request with bytes a test chooses, and counts the
connections it accepted, so keep-alive reuse and reconnects can be asserted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.sender.http import WebhookClient
from shared.core.attempts import BODY_CUT
from shared.core.ssrf import Allowlist

ALLOW = Allowlist.parse("127.0.0.0/8,::1/128")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# respond(connection number, request number on that connection) -> bytes to send; None
# closes the connection without answering, b"" holds it unanswered until the test ends.
Respond = Callable[[int, int], bytes | None]


@dataclass
class Request:
    conn: int
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class RawServer:
    respond: Respond
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    close_after: bool = False  # close each connection after its first answer
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn, n = self.connections, 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                req = Request(conn, head, b"")
                req.body = await reader.readexactly(int(req.header("Content-Length") or 0))
                self.requests.append(req)
                n += 1
                answer = self.respond(conn, n)
                if answer is None:
                    return
                if not answer:
                    await self.hold.wait()
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after or b"Connection: close" in answer:
                    return
        finally:
            writer.close()


Serve = Callable[..., Awaitable["RawServer"]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[tuple[asyncio.Server, RawServer]] = []

    async def start(respond: Respond, close_after: bool = False) -> RawServer:
        raw = RawServer(respond, close_after=close_after)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append((server, raw))
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server, raw in servers:
        raw.hold.set()
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    c = WebhookClient(ALLOW, concurrency=8, max_request_bytes=1 << 20)
    await c.start()
    yield c
    await c.close()


async def test_post_sends_the_exact_request_and_reuses_the_connection(
    serve: Serve, client: WebhookClient
) -> None:
    srv = await serve(
        lambda c, n: b"HTTP/1.1 201 Created\r\nX-Seen: yes\r\nContent-Length: 4\r\n\r\ndone"
    )
    body = b'{"a": 1}'
    for _ in range(3):
        result = await client.post(
            srv.url + "hook?x=1",
            body,
            {"Content-Type": "application/json", "X-Hookline-Event": "push"},
            timeout_s=5,
        )
        assert (result.status, result.error, result.body) == (201, None, "done")
        assert result.headers["X-Seen"] == "yes" and result.resolved_ip == "127.0.0.1"
    assert srv.connections == 1  # keep-alive
    req = srv.requests[0]
    assert req.head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n") and req.body == body
    assert req.header("Host") == f"127.0.0.1:{srv.port}"
    assert req.header("Content-Length") == str(len(body))
    assert req.header("Content-Type") == "application/json"
    assert req.header("X-Hookline-Event") == "push"
    assert req.header("Accept-Encoding") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "a\r\nX-Injected: b"},
        {"X-A": "a\nb"},
        {"X-A\r": "a"},
        {"X-A": "\r"},
        {"X-A": "\x00"},
    ],
)
async def test_a_newline_in_a_header_is_refused_before_sending(
    serve: Serve, client: WebhookClient, headers: dict[str, str]
) -> None:
    srv = await serve(lambda c, n: OK)
    # A failed attempt like any other (nothing in an attempt may raise), nothing sent.
    result = await client.post(srv.url, b"{}", headers, timeout_s=5)
    assert (result.error, result.status) == ("connect", None)
    assert srv.requests == []


async def test_chunked_response_is_read_whole_and_the_connection_kept(
    serve: Serve, client: WebhookClient
) -> None:
    chunked = (
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    srv = await serve(lambda c, n: chunked)
    url = srv.url
    for _ in range(2):
        result = await client.post(url, b"{}", {}, timeout_s=5)
        assert (result.status, result.error, result.body) == (500, "http_status", "hello world")
    assert srv.connections == 1


async def test_connection_close_means_a_new_connection_next_time(
    serve: Serve, client: WebhookClient
) -> None:
    srv = await serve(
        lambda c, n: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    url = srv.url
    for _ in range(3):
        assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
    assert srv.connections == 3


async def test_body_without_length_is_read_until_close(serve: Serve, client: WebhookClient) -> None:
    srv = await serve(lambda c, n: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True)
    url = srv.url
    for _ in range(2):
        result = await client.post(url, b"{}", {}, timeout_s=5)
        assert (result.status, result.body) == (200, "until the end")
    assert srv.connections == 2


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("size", [20_000, 400_000])  # the larger one fills the read buffer
async def test_a_long_body_is_cut_and_its_connection_not_reused(
    serve: Serve, client: WebhookClient, chunked: bool, size: int
) -> None:
    big = b"x" * size
    if chunked:
        long = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        long += b"".join(b"%x\r\n%s\r\n" % (1000, big[i : i + 1000]) for i in range(0, size, 1000))
        long += b"0\r\n\r\n"
    else:
        long = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, big)
    srv = await serve(lambda c, n: long if c == 1 else OK)
    url = srv.url
    first = await client.post(url, b"{}", {}, timeout_s=5)
    assert (first.status, first.error, len(first.body or "")) == (200, None, BODY_CUT)
    second = await client.post(url, b"{}", {}, timeout_s=5)
    assert (second.status, second.body) == (200, "ok")  # not the rest of the first body
    assert srv.connections == 2


async def test_an_idle_connection_the_server_closed_is_replaced_transparently(
    serve: Serve, client: WebhookClient
) -> None:
    # Keep-alive answers, but the server drops every connection right after answering.
    srv = await serve(lambda c, n: OK, close_after=True)
    url = srv.url
    assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
    deadline = time.monotonic() + 5
    while any(not c.closed for c in client.pool.idle()):
        assert time.monotonic() < deadline, "the client never saw the close"
        await asyncio.sleep(0.01)
    result = await client.post(url, b"{}", {}, timeout_s=5)
    assert (result.status, result.error) == (200, None)
    assert srv.connections == 2


async def test_a_close_racing_the_next_request_is_retried_once_on_a_new_connection(
    serve: Serve, client: WebhookClient
) -> None:
    # The second request on a connection is met by a close, as when the endpoint's idle
    # timeout fires just as the request goes out.
    srv = await serve(lambda c, n: OK if n == 1 else None)
    url = srv.url
    assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
    result = await client.post(url, b"{}", {}, timeout_s=5)
    assert (result.status, result.error) == (200, None)
    assert srv.connections == 2 and [r.conn for r in srv.requests] == [1, 1, 2]


async def test_a_reused_connection_cut_mid_answer_is_not_retried(
    serve: Serve, client: WebhookClient
) -> None:
    srv = await serve(lambda c, n: OK if n == 1 else b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
    url = srv.url
    assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
    result = await client.post(url, b"{}", {}, timeout_s=5)
    assert (result.status, result.error) == (None, "connect")  # it may have been handled
    assert len(srv.requests) == 2 and srv.connections == 1


async def test_a_new_connection_closed_without_an_answer_is_a_connect_failure(
    serve: Serve, client: WebhookClient
) -> None:
    srv = await serve(lambda c, n: None)
    result = await client.post(srv.url, b"{}", {}, timeout_s=5)
    assert (result.status, result.error, result.resolved_ip) == (None, "connect", "127.0.0.1")
    assert srv.connections == 1  # not retried


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc",  # cut short
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
async def test_a_broken_response_is_a_connect_failure(
    serve: Serve, client: WebhookClient, answer: bytes
) -> None:
    srv = await serve(lambda c, n: answer)
    result = await client.post(srv.url, b"{}", {}, timeout_s=5)
    assert (result.status, result.error) == (None, "connect")


async def test_informational_responses_are_skipped(serve: Serve, client: WebhookClient) -> None:
    srv = await serve(lambda c, n: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    result = await client.post(srv.url, b"{}", {}, timeout_s=5)
    assert (result.status, result.body) == (200, "ok")


async def test_redirects_are_not_followed(serve: Serve, client: WebhookClient) -> None:
    srv = await serve(
        lambda c, n: b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    )
    result = await client.post(srv.url + "here", b"{}", {}, timeout_s=5)
    assert (result.status, result.error) == (302, "http_status")
    assert result.headers["Location"] == "/elsewhere"
    assert len(srv.requests) == 1


async def test_no_answer_in_time_is_a_timeout_and_the_connection_dropped(
    serve: Serve, client: WebhookClient
) -> None:
    srv = await serve(lambda c, n: b"" if c == 1 else OK)  # the first one never answers
    url = srv.url
    result = await client.post(url, b"{}", {}, timeout_s=0.5)
    assert (result.status, result.error, result.resolved_ip) == (None, "timeout", "127.0.0.1")
    # It waited out the timeout; how soon after it gave up is timing: `make bench` reports
    # it (the "timeouts" phase).
    assert result.duration_ms >= 450
    after = await client.post(url, b"{}", {}, timeout_s=5)
    assert after.ok and srv.connections == 2  # the timed-out connection was not reused


async def test_refused_connection_and_unknown_host(client: WebhookClient) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    refused = await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
    assert (refused.status, refused.error, refused.resolved_ip) == (None, "connect", "127.0.0.1")
    unknown = await client.post("http://no-such-host.invalid/", b"{}", {}, timeout_s=5)
    assert (unknown.status, unknown.error) == (None, "dns")


async def test_https_to_a_plain_http_port_is_a_tls_failure(client: WebhookClient) -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        result = await client.post(f"https://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
        assert (result.status, result.error) == (None, "tls")
    finally:
        await runner.cleanup()


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


async def test_https_sends_the_host_name_as_sni_and_checks_the_certificate(
    tmp_path: Path, client: WebhookClient
) -> None:
    cert, key = _self_signed("localhost")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    names: list[str | None] = []

    def sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = sni
    raw = RawServer(lambda c, n: OK)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/secure"
    try:
        untrusted = await client.post(url, b"{}", {}, timeout_s=5)
        assert (untrusted.status, untrusted.error) == (None, "tls")  # self-signed
        assert raw.requests == []
        trusting = WebhookClient(
            ALLOW,
            concurrency=8,
            max_request_bytes=1 << 20,
            tls=ssl.create_default_context(cadata=cert.decode()),
        )
        await trusting.start()
        try:
            for _ in range(2):
                result = await trusting.post(url, b"{}", {}, timeout_s=5)
                assert (result.status, result.body, result.resolved_ip) == (
                    200,
                    "ok",
                    "127.0.0.1",
                )
        finally:
            await trusting.close()
        assert names[-1] == "localhost"
        assert raw.requests[0].header("Host") == f"localhost:{port}"
        assert raw.connections == 1  # TLS connections are kept alive too
    finally:
        server.close()


async def test_idle_connections_are_closed_after_the_keepalive_time(serve: Serve) -> None:
    client = WebhookClient(ALLOW, concurrency=8, max_request_bytes=1 << 20, keepalive_s=0.3)
    await client.start()
    try:
        srv = await serve(lambda c, n: OK)
        url = srv.url
        assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
        [conn] = client.pool.idle()
        deadline = time.monotonic() + 5
        while not conn.closed or client.pool.idle():
            assert time.monotonic() < deadline, "the idle connection was never closed"
            await asyncio.sleep(0.02)
        assert (await client.post(url, b"{}", {}, timeout_s=5)).ok
        assert srv.connections == 2
    finally:
        await client.close()


async def test_an_unbounded_client_leaves_the_bound_to_its_caller(serve: Serve) -> None:
    # The sender holds a global slot around every call, so its client takes no second one.
    client = WebhookClient(ALLOW, concurrency=2, max_request_bytes=1 << 20, bounded=False)
    await client.start()
    try:
        srv = await serve(lambda c, n: OK)
        url = srv.url
        results = await asyncio.gather(
            *(client.post(url, b"{}", {}, timeout_s=5) for _ in range(6))
        )
        assert all(r.ok for r in results)
        assert srv.connections > 2  # six at once: more than `concurrency` were in flight
    finally:
        await client.close()
