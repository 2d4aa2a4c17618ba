"""The sender against hostile input and slow infrastructure: a URL stored before creation
parsed as the sender does, a resolver that never answers, custom headers, cut response
headers. Runs a sender of its own (the fixtures of conftest.py, as test_sender.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections import Counter

import pytest

from services.sender.http import WebhookClient
from shared import netguard
from shared.config import Settings
from shared.core.ssrf import Address
from shared.netguard import PinnedResolver
from tests.integration.sender_support import Harness, Receiver


async def test_a_url_the_sender_cannot_parse_is_a_dns_failure_not_an_exception(
    sender_settings: Settings,
) -> None:
    client = WebhookClient(
        sender_settings.allowed_targets, concurrency=4, max_request_bytes=1 << 20
    )
    await client.start()
    try:
        result = await client.post("http://exa\u200bmple.com/", b"{}", {}, timeout_s=2)
    finally:
        await client.close()
    assert (result.error, result.status) == ("dns", None)


async def test_a_stored_url_that_no_longer_parses_is_logged_as_a_failed_attempt(
    harness: Harness, org: str
) -> None:
    wid, _ = await harness.hook(org, f"/ok/{org}", retry={"max_retries": 1, "interval_s": 1})
    # As a webhook created before creation and delivery parsed URLs the same way.
    await harness.pool.execute(
        "UPDATE webhooks SET url = $2 WHERE id = $1", uuid.UUID(wid), "http://exa\u200bmple.com/"
    )
    msg = await harness.produce(wid, org)
    rows = await harness.attempts(msg.delivery_id, 2)
    assert [(r["attempt"], r["outcome"], r["error"]) for r in rows] == [
        (1, "failed", "dns"),
        (2, "dead", "dns"),
    ]


class FakeDns:
    """Resolves every host to 127.0.0.1, except those starting with "hang", which never
    answer; counts the lookups per host."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.calls[host] += 1
        if host.startswith("hang"):
            await asyncio.Event().wait()
        return [ipaddress.IPv4Address("127.0.0.1")]


async def test_a_host_that_never_answers_costs_its_webhook_a_dns_failure_and_no_one_else_a_wait(
    receiver: Receiver, sender_settings: Settings
) -> None:
    dns = FakeDns()
    allow = sender_settings.allowed_targets
    client = WebhookClient(
        allow,
        concurrency=64,
        max_request_bytes=1 << 20,
        resolver=PinnedResolver(allow, lookup=dns),
    )
    await client.start()
    port = receiver.base.rsplit(":", 1)[1]
    tag = uuid.uuid4().hex[:8]
    try:
        hung = [
            asyncio.create_task(
                client.post(f"http://hang.example:{port}/ok/{tag}", b"{}", {}, timeout_s=2)
            )
            for _ in range(20)
        ]
        await asyncio.sleep(0.1)  # every one of them is waiting for the lookup
        fine = await client.post(f"http://fine.example:{port}/ok/{tag}", b"{}", {}, timeout_s=2)
        assert (fine.error, fine.status) == (None, 200)
        results = await asyncio.gather(*hung)
        assert {(r.error, r.status) for r in results} == {("dns", None)}
        assert dns.calls["hang.example"] == 1  # one lookup for all twenty
        again = await client.post(f"http://hang.example:{port}/", b"{}", {}, timeout_s=2)
        assert again.error == "dns" and dns.calls["hang.example"] == 1  # remembered
    finally:
        await client.close()
    assert len(receiver.requests(f"/ok/{tag}")) == 1


async def test_through_the_sender_a_silent_dns_is_its_webhooks_dns_failure_only(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, org: str
) -> None:
    monkeypatch.setattr(netguard, "resolve", FakeDns())
    port = harness.receiver.base.rsplit(":", 1)[1]
    once = {"retry": {"max_retries": 0, "interval_s": 1}, "timeout_s": 2}
    hang, _ = await harness.hook(org, "/ok/", **once)
    fine, _ = await harness.hook(org, "/ok/", **once)
    # Created with a literal address; moved to names only the fake resolver knows.
    for wid, url in (
        (hang, f"http://hang-{org}.example:{port}/ok/{org}/hang"),
        (fine, f"http://fine-{org}.example:{port}/ok/{org}/fine"),
    ):
        await harness.pool.execute(
            "UPDATE webhooks SET url = $2 WHERE id = $1", uuid.UUID(wid), url
        )
    stuck = [await harness.produce(hang, org) for _ in range(5)]
    sent = await harness.produce(fine, org)
    [ok] = await harness.attempts(sent.delivery_id, 1)
    assert (ok["outcome"], ok["error"], ok["response_status"]) == ("succeeded", None, 200)
    for msg in stuck:
        [row] = await harness.attempts(msg.delivery_id, 1)
        assert (row["outcome"], row["error"]) == ("dead", "dns")
    assert harness.requests(f"/ok/{org}/hang") == []


async def test_custom_headers_are_sent_on_every_attempt_and_logged_masked(
    harness: Harness, org: str
) -> None:
    token = "glpat-" + uuid.uuid4().hex
    path = f"/flaky/{org}/headers"
    harness.receiver.fail_first[path] = 1
    wid, _ = await harness.hook(
        org,
        path,
        retry={"schedule": [1]},
        headers={"X-Gitlab-Token": token, "X-Team": "payments"},
    )
    msg = await harness.produce(wid, org)
    rows = await harness.attempts(msg.delivery_id, 2)
    assert [r["outcome"] for r in rows] == ["failed", "succeeded"]
    sent = harness.requests(path)
    assert [h["X-Gitlab-Token"] for h, _ in sent] == [token, token]
    assert [h["X-Team"] for h, _ in sent] == ["payments", "payments"]
    assert all(h["Content-Type"] == "application/json" for h, _ in sent)
    for row in rows:
        assert row["request_headers"]["X-Gitlab-Token"] == "\u2022\u2022\u2022\u2022"
        assert token not in str(row["request_headers"])


async def _answering(response: bytes) -> asyncio.Server:
    """A local server that answers every request on a connection with `response`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_response_headers_are_cut_at_16_kib_like_bodies(
    sender_settings: Settings,
) -> None:
    many = b"".join(b"X-Filler-%03d: %s\r\n" % (n, b"f" * 1000) for n in range(60))
    server = await _answering(
        b"HTTP/1.1 500 Oops\r\nX-First: 1\r\n" + many + b"Content-Length: 0\r\n\r\n"
    )
    port = server.sockets[0].getsockname()[1]
    client = WebhookClient(
        sender_settings.allowed_targets, concurrency=4, max_request_bytes=1 << 20
    )
    await client.start()
    try:
        result = await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
    finally:
        await client.close()
        server.close()
    assert result.status == 500
    size = sum(len(k) + len(v) + 4 for k, v in result.headers.items())
    assert size <= 16 * 1024
    assert result.headers["X-First"] == "1" and "X-Filler-000" in result.headers
    assert "X-Filler-059" not in result.headers


async def test_idle_connections_are_capped_in_all_not_only_per_endpoint(
    sender_settings: Settings,
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    servers = [await _answering(ok) for _ in range(5)]
    client = WebhookClient(
        sender_settings.allowed_targets,
        concurrency=4,
        max_request_bytes=1 << 20,
        max_idle_total=3,
    )
    await client.start()
    try:
        for server in servers:
            port = server.sockets[0].getsockname()[1]
            result = await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
            assert result.status == 200
        idle = client.pool.idle()
        assert len(idle) == 3  # the two least recently used were closed
        newest = servers[-1].sockets[0].getsockname()[1]
        assert any(conn.transport is not None for conn in idle)
        assert newest in {c.transport.get_extra_info("peername")[1] for c in idle if c.transport}
    finally:
        await client.close()
        for server in servers:
            server.close()
