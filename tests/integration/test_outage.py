"""While PostgreSQL is unreachable, every route kind answers 503 `unavailable` with a
Retry-After, never a 500 or a traceback, and the error is logged at most once a second.

The database is cut off through a TCP proxy of the test's own, so the shared test server
keeps running for the other tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.inbound.app import create_app as create_edge
from shared.config import Settings
from tests.integration.api_support import admin, api_client, error_of, make_webhook


class CuttableProxy:
    """Forwards TCP to the database until `cut()`: then drops every connection and
    refuses new ones, as a stopped server would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxied(provisioned: Settings) -> AsyncIterator[tuple[Settings, CuttableProxy]]:
    url = urlsplit(provisioned.database_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    netloc = url.netloc.replace(f":{url.port}", f":{port}")
    yield dataclasses.replace(provisioned, database_url=url._replace(netloc=netloc).geturl()), proxy
    await proxy.close()


async def test_every_route_kind_answers_503_while_the_database_is_down(
    proxied: tuple[Settings, CuttableProxy], org: str, capfd: pytest.CaptureFixture[str]
) -> None:
    settings, proxy = proxied
    async with (
        api_client(settings) as api,
        TestClient(TestServer(create_edge(settings, maintenance=False))) as edge,
    ):
        h = admin(settings)
        hook = await make_webhook(api, h, org, "widgets")
        created = await api.post(
            f"/api/v1/repos/{org}/widgets/inbound-webhooks",
            json={"name": "n", "verify": "none"},
            headers=h,
        )
        inbound = await created.json()
        assert (await edge.post(f"/hooks/in/{inbound['id']}", json={})).status == 202
        proxy.cut()
        calls = [
            api.get(f"/api/v1/repos/{org}/widgets/webhooks", headers=h),  # a list
            api.get(f"/api/v1/webhooks/{hook['id']}", headers=h),  # a read
            api.post(  # a create
                f"/api/v1/repos/{org}/widgets/webhooks",
                json={"url": "http://127.0.0.1:9/", "events": ["push"]},
                headers=h,
            ),
            api.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": False}, headers=h),
            api.post(  # ingest
                f"/api/v1/repos/{org}/widgets/events",
                json={"event": "push", "payload": {}},
                headers=h,
            ),
            api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=h),  # the log
            api.get(f"/api/v1/webhooks/{hook['id']}/stats", headers=h),
            api.post(f"/api/v1/webhooks/{hook['id']}/ping", headers=h),
            edge.post(f"/hooks/in/{inbound['id']}", json={}),  # the inbound edge
        ]
        for call in calls:
            resp = await call
            error = await error_of(resp, 503)
            assert error["code"] == "unavailable", error
            assert int(resp.headers["Retry-After"]) >= 1
        # Readiness says so too (with its own shape).
        assert (await api.get("/readyz")).status == 503
        assert (await edge.get("/readyz")).status == 503
    out, err = capfd.readouterr()
    ours = out + err
    # No 500 and no traceback of ours; the outage is logged at most once a second.
    assert "unhandled error" not in ours
    assert ours.count("dependency unavailable") <= 3, ours
