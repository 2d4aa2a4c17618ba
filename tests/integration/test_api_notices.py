"""Webhook health and notices over HTTP: the health fields on every webhook object,
notify_email, and PATCH active:true with recover_since (what failed, died or was skipped
since then is sent again; 202 with `recovered`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import DeliveryMessage
from shared.kafka import DELIVERIES, EVENTS
from tests.integration.api_support import (
    error_of,
    make_webhook,
    org_token,
    outbox_rows,
)
from tests.integration.test_api_deliveries import log_delivery

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_every_webhook_object_carries_its_health_and_notify_email(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    h = await org_token(api, settings, org)
    wh = await make_webhook(api, h, org, notify_email="ops@example.com")
    assert (wh["failure_count"], wh["last_delivery"], wh["disabled_at"]) == (0, None, None)
    assert wh["notify_email"] == "ops@example.com"
    dead = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "dead"))
    await pool.execute("UPDATE deliveries SET last_status = 500 WHERE id = $1", uuid.UUID(dead))
    await pool.execute(
        "INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at)"
        " VALUES ($1, 2, $2)",
        uuid.UUID(wh["id"]),
        T0,
    )
    path = f"/api/v1/webhooks/{wh['id']}"
    got = await (await api.get(path, headers=h)).json()
    assert got["failure_count"] == 2
    assert got["last_delivery"] == {
        "status": "dead",
        "at": "2026-03-01T12:00:02.000Z",
        "http_status": 500,
    }
    listed = await (await api.get(f"/api/v1/repos/{org}/widgets/webhooks", headers=h)).json()
    assert listed["webhooks"][0]["failure_count"] == 2
    off = await (await api.patch(path, json={"active": False}, headers=h)).json()
    assert off["disabled_at"] is not None and off["failure_count"] == 2
    on = await (await api.patch(path, json={"active": True}, headers=h)).json()
    assert on["disabled_at"] is None and on["failure_count"] == 0
    cleared = await (await api.patch(path, json={"notify_email": None}, headers=h)).json()
    assert cleared["notify_email"] is None
    bad = await api.patch(path, json={"notify_email": "not an address"}, headers=h)
    assert (await error_of(bad, 422))["field"] == "notify_email"
    # A hand-made disable is not a notice; re-enabling it is.
    kinds = [r["type"] for r in await outbox_rows(pool, EVENTS, org)]
    assert kinds == ["webhook.enabled"]


async def test_patch_active_true_with_recover_since_sends_again_failed_dead_and_skipped(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    h = await org_token(api, settings, org)
    wh = await make_webhook(api, h, org, active=False)
    dead = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "dead"))
    skipped = await log_delivery(pool, wh, status="skipped", at=T0, outcomes=("skipped",))
    await log_delivery(pool, wh, status="succeeded", at=T0, outcomes=("succeeded",))
    old = await log_delivery(pool, wh, status="failed", at=T0 - timedelta(days=2))
    path = f"/api/v1/webhooks/{wh['id']}"
    since = (T0 - timedelta(hours=1)).isoformat()
    for body in ({"recover_since": since}, {"active": False, "recover_since": since}):
        refused = await api.patch(path, json=body, headers=h)
        assert (await error_of(refused, 422))["field"] == "recover_since"
    resp = await api.patch(path, json={"active": True, "recover_since": "soon"}, headers=h)
    assert (await error_of(resp, 422))["field"] == "recover_since"
    resp = await api.patch(path, json={"active": True, "recover_since": since}, headers=h)
    assert resp.status == 202
    body = await resp.json()
    assert body["recovered"] == 2 and body["active"] is True and body["id"] == wh["id"]
    rows = await outbox_rows(pool, DELIVERIES, wh["id"])
    msgs = [DeliveryMessage.decode(orjson.dumps(r)) for r in rows]
    assert {(m.delivery_id, m.trigger) for m in msgs} == {(dead, "recover"), (skipped, "recover")}
    assert old not in {m.delivery_id for m in msgs}
    assert [r["type"] for r in await outbox_rows(pool, EVENTS, org)] == ["webhook.enabled"]


async def test_a_producer_cannot_forge_a_notice(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    """webhook.* events are Hookline's own: the ingest routes (single and batch) and an
    inbound webhook's `event` refuse them with a 422 on `event`, and nothing is queued."""
    h = await org_token(api, settings, org)
    queued = "SELECT count(*) FROM outbox WHERE topic = $1 AND position($2::bytea in value) > 0"
    before = await pool.fetchval(queued, EVENTS, org.encode())
    single = await api.post(
        f"/api/v1/repos/{org}/r/events",
        json={"event": "webhook.disabled", "payload": {"webhook": {"id": "x"}}},
        headers=h,
    )
    assert (await error_of(single, 422))["field"] == "event"
    batch = await api.post(
        "/api/v1/events/batch",
        json={
            "events": [
                {"org": org, "repo": "r", "event": "webhook", "action": "failing", "payload": {}},
                {"org": org, "repo": "r", "event": "push", "payload": {}},
            ]
        },
        headers=h,
    )
    assert batch.status == 200
    results = (await batch.json())["results"]
    assert [r["status"] for r in results] == [422, 202]
    assert results[0]["error"]["field"] == "event"
    inbound = await api.post(
        f"/api/v1/repos/{org}/r/inbound-webhooks",
        json={"name": "ci", "event": "webhook.enabled"},
        headers=h,
    )
    assert (await error_of(inbound, 422))["field"] == "event"
    assert await pool.fetchval(queued, EVENTS, org.encode()) == before + 1  # the push only
