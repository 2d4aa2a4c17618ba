"""The local receiver (`make receiver`): it verifies both signatures the sender makes."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import aiohttp
import orjson
from aiohttp.test_utils import TestClient, TestServer

from services.receiver import make_app
from shared.core.signing import generate_secret, signature_headers

SECRET = generate_secret(b"k" * 32)
OLD = generate_secret(b"o" * 32)


def signed(body: bytes, secrets: list[str], *, attempt: int = 1) -> dict[str, str]:
    headers = signature_headers(
        prefix="X-Hookline",
        secrets=secrets,
        delivery_id="d-1",
        timestamp=int(time.time()),
        body=body,
    )
    return {
        **headers,
        "X-Hookline-Event": "push",
        "X-Hookline-Delivery": "d-1",
        "X-Hookline-Attempt": str(attempt),
        "Content-Type": "application/json",
    }


async def test_receiver_verifies_both_signatures() -> None:
    lines: list[str] = []
    body = orjson.dumps({"event": "push", "n": 1})
    async with TestClient(TestServer(make_app(secret=SECRET, out=lines.append))) as client:
        assert (await client.post("/", data=body, headers=signed(body, [SECRET]))).status == 200
        # During a rotation the Standard Webhooks header carries both signatures.
        resp = await client.post("/x", data=body, headers=signed(body, [SECRET, OLD], attempt=2))
        assert resp.status == 200
        # Signed with another secret: both checks fail, still answered 200.
        await client.post("/", data=body, headers=signed(body, [OLD], attempt=3))
        # Tampered body.
        await client.post("/", data=body + b" ", headers=signed(body, [SECRET], attempt=4))
        await client.post("/", data=body, headers=signed(body, [SECRET]))
    assert "delivery=d-1 attempt=1 github-sig=ok standard-sig=ok" in lines[0]
    assert lines[0].startswith("push")
    assert "attempt=2 github-sig=ok standard-sig=ok" in lines[1]
    assert "attempt=3 github-sig=BAD standard-sig=BAD" in lines[2]
    assert "attempt=4 github-sig=BAD standard-sig=BAD" in lines[3]
    assert lines[4].endswith("(seen before)") and not lines[0].endswith("(seen before)")


async def test_receiver_old_secret_verifies_standard_only_during_rotation() -> None:
    lines: list[str] = []
    body = b'{"event":"ping"}'
    async with TestClient(TestServer(make_app(secret=OLD, out=lines.append))) as client:
        await client.post("/", data=body, headers=signed(body, [SECRET, OLD]))
    # GitHub's header is signed with the current secret only.
    assert "github-sig=BAD standard-sig=ok" in lines[0]


async def test_receiver_without_secret_and_fail_rate() -> None:
    lines: list[str] = []
    app = make_app(secret=None, fail_rate=0.5, out=lines.append, chance=lambda: 0.1)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/", data=b"{}", headers=signed(b"{}", [SECRET]))
        assert resp.status == 500
    assert "unchecked" in lines[0]


async def test_make_receiver_entry_point_prints_one_line_per_delivery() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "services.receiver", "--port", str(port), "--secret", SECRET],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        body = b'{"event":"push"}'
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.post(
                        f"http://127.0.0.1:{port}/", data=body, headers=signed(body, [SECRET])
                    ) as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "receiver did not start"
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert "github-sig=ok standard-sig=ok" in out.decode()
