"""Helpers for the console's tests: sign in, read a page's CSRF token, log a delivery."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.integration.log_rows import delivery_of, insert, insert_summary

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(client: TestClient, token: str) -> str:
    """Signs `client` in with `token`; returns the CSRF token of its session."""
    login = await client.get("/console/login")
    assert login.status == 200
    resp = await client.post(
        "/console/login", data={"token": token, "csrf": csrf_of(await login.text())}
    )
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())


async def log_attempt(
    pool: asyncpg.Pool,
    webhook: dict[str, Any],
    *,
    outcome: str = "failed",
    status: int = 500,
    response_body: str = "",
    response_headers: dict[str, str] | None = None,
    at: datetime | None = None,
    delivery_id: uuid.UUID | None = None,
    event_type: str = "push",
) -> str:
    """One delivery of one attempt, in the log and its summary (as the sender writes it)."""
    delivery_id = delivery_id or uuid.uuid4()
    at = at or datetime.now(UTC)
    event_id = "evt-" + uuid.uuid4().hex[:8]
    error = None if outcome == "succeeded" else "http_status"
    delivery = delivery_of(webhook, delivery_id, event_id, event_type)
    await insert(
        pool,
        "delivery_attempts",
        delivery
        | {
            "attempt": 1,
            "trigger": "auto",
            "outcome": outcome,
            "started_at": at,
            "duration_ms": 12.5,
            "request_headers": {"Content-Type": "application/json", "X-Hookline-Event": "push"},
            "request_body": '{"event":"push","ref":"refs/heads/main"}',
            "response_status": status,
            "response_headers": response_headers or {"Server": "test"},
            "response_body": response_body,
            "error": error,
            "resolved_ip": "127.0.0.1",
        },
    )
    await insert_summary(
        pool,
        delivery,
        status=outcome,
        attempts=1,
        first_at=at,
        last_at=at,
        last_error=error,
        last_status=status,
    )
    return str(delivery_id)
