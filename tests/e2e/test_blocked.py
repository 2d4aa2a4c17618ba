"""With no allowlist, a loopback target is `blocked` and never receives a request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.config import Settings
from shared.core.messages import delivery_id_for
from shared.crypto import SecretBox
from shared.outbox import enqueue_event
from shared.webhooks import WebhookStore
from tests.e2e.conftest import Pipeline, start_pipeline
from tests.e2e.harness import Receiver, eventually


@pytest.fixture(scope="module")
async def strict_pipeline(
    provisioned: Settings, service_env: dict[str, str]
) -> AsyncIterator[Pipeline]:
    p = await start_pipeline(service_env, senders=1, HOOKLINE_ALLOWED_TARGETS="")
    yield p
    p.stop()


async def test_loopback_target_is_blocked_without_allowlist(
    strict_pipeline: Pipeline,
    receiver: Receiver,
    pool: asyncpg.Pool,
    settings: Settings,
    org: str,
) -> None:
    # The hook is registered while loopback is allowed (as if DNS changed afterwards).
    store = WebhookStore(
        pool, SecretBox(settings.secret_key), allow=settings.allowed_targets, max_per_repo=20
    )
    hook, _ = await store.create(org, "r", {"url": receiver.url("/inside"), "events": ["*"]})
    event_id = "evt-" + uuid.uuid4().hex
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_event(conn, org=org, repo="r", event="push", payload={}, event_id=event_id)

    async def attempt() -> list[asyncpg.Record]:
        return await pool.fetch(
            "SELECT error, outcome FROM delivery_attempts WHERE delivery_id = $1",
            uuid.UUID(delivery_id_for(event_id, hook.id)),
        )

    rows = await eventually(attempt, timeout=30, what="the blocked attempt")
    assert rows[0]["error"] == "blocked"
    assert receiver.at("/inside") == []
