"""Helpers for the console's tests: sign in, read a page's CSRF token, log a delivery."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

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
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at, duration_ms, request_headers, request_body,"
        " response_status, response_headers, response_body, error, resolved_ip)"
        " VALUES ($1, $2, $3, $4, $13, 1, 'auto', $5, $6, 12.5, $7, $8, $9, $10, $11, $12,"
        " '127.0.0.1')",
        delivery_id,
        uuid.UUID(webhook["id"]),
        webhook["scope"]["org"],
        event_id,
        outcome,
        at,
        {"Content-Type": "application/json", "X-Hookline-Event": "push"},
        '{"event":"push","ref":"refs/heads/main"}',
        status,
        response_headers or {"Server": "test"},
        response_body,
        None if outcome == "succeeded" else "http_status",
        event_type,
    )
    await pool.execute(
        "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
        " first_at, last_at, last_error, last_status)"
        " VALUES ($1, $2, $3, $4, $9, $5, 1, $6, $6, $7, $8)",
        delivery_id,
        uuid.UUID(webhook["id"]),
        webhook["scope"]["org"],
        event_id,
        "dead" if outcome == "dead" else outcome,
        at,
        None if outcome == "succeeded" else "http_status",
        status,
        event_type,
    )
    return str(delivery_id)
