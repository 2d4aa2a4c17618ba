"""The real stack for browser tests: relay, matcher, a sender, the API and (for the inbound
pages) the inbound edge as processes, a receiver on its own thread (selenium blocks the
test's loop), and a headless Chromium."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from selenium.webdriver.chrome.webdriver import WebDriver

from shared.config import Settings
from tests.browser.chrome import chrome
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Pipeline, free_port, start_pipeline
from tests.e2e.harness import Behaviour, Receiver, wait_ready
from tests.infra import own_database

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def hostile(status: int) -> Behaviour:
    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status, text=HOSTILE, content_type="text/html")

    return respond


class ThreadedReceiver:
    """The e2e Receiver, served by an event loop of its own on a thread."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.receiver = Receiver(behaviours=behaviours)

    def start(self) -> ThreadedReceiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def url(self, path: str) -> str:
        return self.receiver.url(path)

    def at(self, path: str) -> list[Any]:
        return list(self.receiver.at(path))


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, shared_database: str) -> AsyncIterator[str]:
    """A database of its own, as for the e2e modules: the stack's relay publishes only the
    outbox rows of these tests."""
    async with own_database(shared_database, request.module.__name__) as url:
        yield url


@pytest.fixture(scope="module")
async def stack(provisioned: Settings, service_env: dict[str, str]) -> AsyncIterator[Pipeline]:
    # One sender is plenty; failures must not disable a webhook mid-test. The inbound edge's
    # port is chosen now, so that the console shows the URLs it really answers on.
    inbound = f"{free_port()}"
    p = await start_pipeline(
        service_env,
        senders=1,
        HOOKLINE_DISABLE_AFTER_FAILURES="1000",
        HOOKLINE_INBOUND_PORT=inbound,
        HOOKLINE_PUBLIC_URL=f"http://127.0.0.1:{inbound}",
    )
    yield p
    p.stop()


@pytest.fixture(scope="module")
async def inbound_edge(stack: Pipeline) -> str:
    """`python -m services.inbound` beside the stack (stopped with it); its base URL."""
    proc = stack.start("inbound")
    base = stack.env["HOOKLINE_PUBLIC_URL"]

    await wait_ready(base, [proc], what="the inbound edge's /readyz")
    return base


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """An aiohttp POST from a synchronous test: on a thread of its own, with its own loop
    (the test's loop is not running while selenium blocks)."""

    async def call() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw) if raw else None

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call()).result(30)


@pytest.fixture(scope="module")
def receiver() -> Iterator[ThreadedReceiver]:
    r = ThreadedReceiver({"/fail": hostile(500)}).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chrome()
    yield driver
    driver.quit()


def api(base: str, method: str, path: str, body: Any = None, token: str = TEST_ADMIN_TOKEN) -> Any:
    """A REST call from a synchronous test (the API runs as its own process)."""
    request = urllib.request.Request(
        base + "/api/v1" + path,
        method=method,
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return orjson.loads(raw) if raw else None
