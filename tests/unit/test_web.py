"""The shared error middleware (shared/web.py) on a bare aiohttp app: the tree's errors,
driver errors translated on the way, aiohttp's own errors, and one 500 for the rest."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from shared.core.errors import LogClosed, NotFound, RateLimited, Unavailable
from shared.web import error_middleware_for

Client = TestClient[web.Request, web.Application]

RAISES: dict[str, Exception] = {
    "not-found": NotFound("no such webhook"),
    "rate": RateLimited("slow down", retry_after=7),
    "down": Unavailable("a dependency is unavailable; try again"),
    "starting": asyncpg.CannotConnectNowError("the database system is starting up"),
    "nul": asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
    "bug": KeyError("oops"),
    "internal": LogClosed("not for the API's callers"),
}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async def handler(request: web.Request) -> web.Response:
        raise RAISES[request.match_info["name"]]

    app = web.Application(middlewares=[error_middleware_for("test")])
    app.router.add_get("/{name}", handler)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _error(client: Client, path: str) -> tuple[int, dict[str, Any], str | None]:
    resp = await client.get(path)
    return resp.status, (await resp.json())["error"], resp.headers.get("Retry-After")


async def test_errors_of_the_tree_answer_with_their_status_and_code(client: Client) -> None:
    assert await _error(client, "/not-found") == (
        404,
        {"code": "not_found", "message": "no such webhook"},
        None,
    )
    status, error, retry_after = await _error(client, "/rate")
    assert (status, error["code"], retry_after) == (429, "rate_limited", "7")


async def test_an_outage_answers_503_unavailable_with_retry_after(client: Client) -> None:
    for path in ("/down", "/starting"):
        status, error, retry_after = await _error(client, path)
        assert (status, error["code"], retry_after) == (503, "unavailable", "5")


async def test_a_value_the_database_refuses_is_a_422(client: Client) -> None:
    status, error, _ = await _error(client, "/nul")
    assert (status, error["code"], error["field"]) == (422, "validation_error", "body")


async def test_everything_else_is_one_500(client: Client) -> None:
    for path in ("/bug", "/internal"):
        assert await _error(client, path) == (
            500,
            {"code": "internal", "message": "internal error"},
            None,
        )
    status, error, _ = await _error(client, "/missing/route")
    assert (status, error["code"]) == (404, "not_found")


async def test_a_caller_hanging_up_mid_body_is_not_an_outage() -> None:
    """A client that closes its connection while its body is read makes the read fail with
    ConnectionResetError, an OSError, which the middleware would take for a dependency's
    outage; it is the caller's own going, and nothing is logged as an outage."""
    reading = asyncio.Event()
    failed: list[BaseException] = []

    async def handler(request: web.Request) -> web.Response:
        reading.set()
        try:
            await request.read()
        except BaseException as exc:
            failed.append(exc)
            raise
        return web.Response(text="read")

    app = web.Application(middlewares=[error_middleware_for("test")])
    app.router.add_post("/in", handler)
    # As the services serve (shared.web.serve_app): handlers are not cancelled when their
    # caller goes, so the read itself fails (aiohttp's test server would cancel it).
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.SockSite(runner, socket.create_server(("127.0.0.1", 0)))
    await site.start()
    port = runner.addresses[0][1]
    try:
        with capture_logs() as logs:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            await writer.drain()
            await reading.wait()
            writer.close()
            for _ in range(100):
                if failed:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert failed and isinstance(failed[0], ConnectionResetError)
    assert not [e for e in logs if e.get("event") == "dependency unavailable"], logs
