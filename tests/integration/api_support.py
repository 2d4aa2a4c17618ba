"""Helpers for the API tests: the app in-process on a test server, tokens, webhooks. The
`api`, `owner` and `edge` fixtures built on them are in conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.inbound.app import create_app as create_edge
from shared.config import Settings


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[TestClient]:
    """The API app, with its own pool, served on a loopback port for one block."""
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@asynccontextmanager
async def edge_client(settings: Settings) -> AsyncIterator[TestClient]:
    """The inbound edge, its maintenance loop off, on a loopback port for one block."""
    async with TestClient(TestServer(create_edge(settings, maintenance=False))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin(settings: Settings) -> dict[str, str]:
    return bearer(settings.admin_token)


async def org_token(client: TestClient, settings: Settings, org: str) -> dict[str, str]:
    """Headers carrying a fresh token of `org`, made through the API."""
    resp = await client.post(
        "/api/v1/tokens", json={"org": org, "name": "t"}, headers=admin(settings)
    )
    assert resp.status == 201, await resp.text()
    return bearer((await resp.json())["token"])


async def make_webhook(
    client: TestClient,
    headers: dict[str, str],
    org: str,
    repo: str | None = "widgets",
    **fields: Any,
) -> dict[str, Any]:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["*"], **fields}
    path = f"/api/v1/repos/{org}/{repo}/webhooks" if repo else f"/api/v1/orgs/{org}/webhooks"
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    """Asserts the status and the error shape; returns the `error` object."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    body = orjson.loads(text)
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert "Traceback" not in text
    error: dict[str, Any] = body["error"]
    return error


async def assert_each_refused_naming(
    client: TestClient, path: str, headers: dict[str, str], cases: list[tuple[Any, str]]
) -> None:
    """POSTs each (body, field) of `cases` to `path`: each is a 422 naming that field."""
    for body, field in cases:
        error = await error_of(await client.post(path, json=body, headers=headers), 422)
        assert error["field"] == field, (body, error)


async def outbox_rows(pool: asyncpg.Pool, topic: str, key: str) -> list[dict[str, Any]]:
    """Decoded outbox values for (topic, key), oldest first."""
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id", topic, key.encode()
    )
    return [orjson.loads(r["value"]) for r in rows]


def new_repo() -> str:
    return "repo-" + uuid.uuid4().hex[:8]
