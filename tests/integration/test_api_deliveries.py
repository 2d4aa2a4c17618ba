"""The delivery log over HTTP: list (keyset pages), get, redeliver, recover, stats.

Log rows are inserted directly, as the sender's log writer would."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import DeliveryMessage
from shared.kafka import DELIVERIES
from tests.integration.api_support import (
    admin,
    error_of,
    make_webhook,
    org_token,
)
from tests.integration.log_rows import delivery_of, insert, insert_summary

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


Owned = tuple[dict[str, str], dict[str, Any]]  # an org token's headers, a webhook it made


@pytest.fixture
async def owned(api: TestClient, settings: Settings, org: str) -> Owned:
    """An org token's headers, and a webhook of the org it made."""
    h = await org_token(api, settings, org)
    return h, await make_webhook(api, h, org)


@pytest.fixture
async def admin_owned(api: TestClient, settings: Settings, org: str) -> Owned:
    """The admin token's headers, and a webhook of the org it made."""
    h = admin(settings)
    return h, await make_webhook(api, h, org)


async def log_delivery(
    pool: asyncpg.Pool,
    webhook: dict[str, Any],
    *,
    status: str,
    at: datetime,
    event_type: str = "push",
    outcomes: tuple[str, ...] = ("failed",),
    body: str | None = None,
    duration_ms: float = 10.0,
) -> str:
    """One delivery: its attempts in the log and its summary row."""
    delivery_id = uuid.uuid4()
    event_id = "evt-" + uuid.uuid4().hex[:8]
    body = body if body is not None else orjson.dumps({"event": event_type, "n": 1}).decode()
    delivery = delivery_of(webhook, delivery_id, event_id, event_type)
    for n, outcome in enumerate(outcomes, start=1):
        ok = outcome == "succeeded"
        await insert(
            pool,
            "delivery_attempts",
            delivery
            | {
                "attempt": n,
                "trigger": "auto" if n == 1 else "retry",
                "outcome": outcome,
                "started_at": at + timedelta(seconds=n),
                "duration_ms": duration_ms * n,
                "request_headers": {"Content-Type": "application/json"},
                "request_body": body,
                "response_status": 200 if ok else 500,
                "response_headers": {"Server": "x"},
                "response_body": "r" * 20_000,
                "error": None if ok else "http_status",
            },
        )
    first, last = at + timedelta(seconds=1), at + timedelta(seconds=len(outcomes))
    await insert_summary(
        pool, delivery, status=status, attempts=len(outcomes), first_at=first, last_at=last
    )
    return str(delivery_id)


async def test_list_pages_newest_first_with_filters(
    api: TestClient, pool: asyncpg.Pool, owned: Owned
) -> None:
    h, wh = owned
    ids = []
    for i in range(7):
        status = "succeeded" if i % 2 else "failed"
        etype = "pull_request.opened" if i < 3 else "push"
        ids.append(
            await log_delivery(
                pool, wh, status=status, at=T0 + timedelta(minutes=i), event_type=etype
            )
        )
    newest_first = ids[::-1]
    base = f"/api/v1/webhooks/{wh['id']}/deliveries"

    seen: list[str] = []
    cursor = None
    while True:
        url = base + "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(url, headers=h)).json()
        seen += [d["id"] for d in page["deliveries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    async def listed(query: str) -> list[str]:
        resp = await api.get(base + "?" + query, headers=h)
        assert resp.status == 200, await resp.text()
        return [d["id"] for d in (await resp.json())["deliveries"]]

    assert await listed("status=failed") == [ids[i] for i in (6, 4, 2, 0)]
    assert await listed("event=pull_request") == [ids[2], ids[1], ids[0]]
    assert await listed("event=pull_request.opened&status=succeeded") == [ids[1]]
    since = quote((T0 + timedelta(minutes=2)).isoformat())
    until = quote((T0 + timedelta(minutes=4)).isoformat())
    assert await listed(f"since={since}&until={until}") == [ids[3], ids[2]]
    first = (await (await api.get(base + "?limit=1", headers=h)).json())["deliveries"][0]
    assert first["event"] == "push" and first["attempts"] == 1 and first["status"] == "failed"


async def test_list_rejects_bad_parameters_naming_them(api: TestClient, admin_owned: Owned) -> None:
    h, wh = admin_owned
    base = f"/api/v1/webhooks/{wh['id']}/deliveries"
    for query, field in [
        ("cursor=garbage!", "cursor"),
        ("cursor=WzEsMl0", "cursor"),  # base64 of [1,2]
        ("status=lost", "status"),
        ("event=nope", "event"),
        ("since=yesterday", "since"),
        ("since=0001-01-01T00:00:00%2B01:00", "since"),  # out of range once in UTC
        ("until=2024-13-01", "until"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=1000", "limit"),
    ]:
        error = await error_of(await api.get(f"{base}?{query}", headers=h), 422)
        assert error["field"] == field, (query, error)


async def test_get_delivery_with_attempts_and_cut_bodies(
    api: TestClient,
    settings: Settings,
    pool: asyncpg.Pool,
    org: str,
    owned: Owned,
) -> None:
    h, wh = owned
    did = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "dead"))
    resp = await api.get(f"/api/v1/deliveries/{did}", headers=h)
    assert resp.status == 200
    body = await resp.json()
    assert (body["id"], body["webhook_id"], body["event"], body["status"]) == (
        did,
        wh["id"],
        "push",
        "dead",
    )
    assert [a["attempt"] for a in body["attempts"]] == [1, 2]
    assert [a["trigger"] for a in body["attempts"]] == ["auto", "retry"]
    last = body["attempts"][-1]
    assert last["error"] == "http_status" and last["response"]["status"] == 500
    assert len(last["response"]["body"]) == 16 * 1024 and last["response"]["truncated"] is True
    assert orjson.loads(last["request"]["body"]) == {"event": "push", "n": 1}
    # Another org cannot see it.
    other = await org_token(api, settings, org + "-x")
    await error_of(await api.get(f"/api/v1/deliveries/{did}", headers=other), 404)
    await error_of(await api.post(f"/api/v1/deliveries/{did}/redeliver", headers=other), 404)
    await error_of(await api.get(f"/api/v1/deliveries/{uuid.uuid4()}", headers=h), 404)


async def test_redeliver_enqueues_the_next_attempt(
    api: TestClient, pool: asyncpg.Pool, org: str, owned: Owned
) -> None:
    h, wh = owned
    did = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "failed", "dead"))
    resp = await api.post(f"/api/v1/deliveries/{did}/redeliver", headers=h)
    assert resp.status == 202
    assert await resp.json() == {"delivery_id": did, "attempt": 4}
    (raw,) = await _delivery_messages(pool, wh["id"])
    msg = DeliveryMessage.decode(raw)
    assert (msg.delivery_id, msg.attempt, msg.trigger, msg.single) == (did, 4, "manual", True)
    assert msg.body == {"event": "push", "n": 1} and msg.org == org
    status = await pool.fetchval("SELECT status FROM deliveries WHERE id = $1", uuid.UUID(did))
    assert status == "pending"


async def test_redeliver_decodes_a_form_body(
    api: TestClient,
    settings: Settings,
    pool: asyncpg.Pool,
    org: str,
) -> None:
    h = admin(settings)
    wh = await make_webhook(api, h, org, content_type="form")
    payload = {"event": "push", "text": "a&b=c é"}
    form = "payload=" + quote(orjson.dumps(payload).decode(), safe="")
    did = await log_delivery(pool, wh, status="failed", at=T0, body=form)
    assert (await api.post(f"/api/v1/deliveries/{did}/redeliver", headers=h)).status == 202
    (raw,) = await _delivery_messages(pool, wh["id"])
    assert DeliveryMessage.decode(raw).body == payload


async def test_redeliver_after_a_skipped_attempt_sends_the_last_logged_body(
    api: TestClient, pool: asyncpg.Pool, org: str, admin_owned: Owned
) -> None:
    h, wh = admin_owned
    did = await log_delivery(pool, wh, status="skipped", at=T0, outcomes=("failed",))
    # Then the webhook was disabled: a skipped attempt with no request logged.
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
        " attempt, trigger, outcome, started_at) SELECT delivery_id, webhook_id, org, event_id,"
        " event_type, 2, 'retry', 'skipped', started_at + interval '1 minute'"
        " FROM delivery_attempts WHERE delivery_id = $1",
        uuid.UUID(did),
    )
    assert (await api.post(f"/api/v1/deliveries/{did}/redeliver", headers=h)).status == 202
    (raw,) = await _delivery_messages(pool, wh["id"])
    msg = DeliveryMessage.decode(raw)
    assert msg.body == {"event": "push", "n": 1} and msg.attempt == 3


async def test_redeliver_after_the_webhook_was_deleted_is_409(
    api: TestClient, pool: asyncpg.Pool, admin_owned: Owned
) -> None:
    h, wh = admin_owned
    did = await log_delivery(pool, wh, status="failed", at=T0)
    assert (await api.delete(f"/api/v1/webhooks/{wh['id']}", headers=h)).status == 204
    await error_of(await api.post(f"/api/v1/deliveries/{did}/redeliver", headers=h), 409)


async def test_concurrent_redeliveries_never_share_an_attempt_number(
    api: TestClient, pool: asyncpg.Pool, owned: Owned
) -> None:
    h, wh = owned
    did = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "dead"))
    path = f"/api/v1/deliveries/{did}/redeliver"
    answers = await asyncio.gather(*(api.post(path, headers=h) for _ in range(4)))
    assert [a.status for a in answers] == [202] * 4
    numbers = sorted([(await a.json())["attempt"] for a in answers])
    assert numbers == [3, 4, 5, 6]
    msgs = [DeliveryMessage.decode(r) for r in await _delivery_messages(pool, wh["id"])]
    assert sorted(m.attempt for m in msgs) == numbers
    assert all(m.numbered for m in msgs)  # the sender keeps these numbers
    summary = await pool.fetchval("SELECT attempts FROM deliveries WHERE id = $1", uuid.UUID(did))
    assert summary == 6


async def test_recover_redelivers_failed_and_dead_since(
    api: TestClient, pool: asyncpg.Pool, owned: Owned
) -> None:
    h, wh = owned
    old = await log_delivery(pool, wh, status="failed", at=T0 - timedelta(days=2))
    dead = await log_delivery(pool, wh, status="dead", at=T0, outcomes=("failed", "dead"))
    failed = await log_delivery(pool, wh, status="failed", at=T0 + timedelta(minutes=1))
    await log_delivery(pool, wh, status="succeeded", at=T0, outcomes=("succeeded",))
    path = f"/api/v1/webhooks/{wh['id']}/recover"
    resp = await api.post(path, json={"since": (T0 - timedelta(days=1)).isoformat()}, headers=h)
    assert resp.status == 202 and await resp.json() == {"count": 2}
    msgs = [DeliveryMessage.decode(r) for r in await _delivery_messages(pool, wh["id"])]
    assert {(m.delivery_id, m.attempt, m.trigger) for m in msgs} == {
        (dead, 3, "recover"),
        (failed, 2, "recover"),
    }
    assert all(m.single for m in msgs) and old not in {m.delivery_id for m in msgs}
    for body, field in [({}, "since"), ({"since": "soon"}, "since"), ({"x": 1}, "x")]:
        assert (await error_of(await api.post(path, json=body, headers=h), 422))["field"] == field


async def test_stats(api: TestClient, pool: asyncpg.Pool, owned: Owned) -> None:
    h, wh = owned
    path = f"/api/v1/webhooks/{wh['id']}/stats"
    empty = await (await api.get(path, headers=h)).json()
    assert empty == {
        "deliveries": 0,
        "succeeded": 0,
        "failed": 0,
        "success_rate": None,
        "last_delivery_at": None,
        "p50_ms": None,
        "p99_ms": None,
    }
    for i in range(3):
        await log_delivery(
            pool, wh, status="succeeded", at=T0, outcomes=("succeeded",), duration_ms=10 * (i + 1)
        )
    await log_delivery(pool, wh, status="dead", at=T0, outcomes=("dead",), duration_ms=40)
    await log_delivery(pool, wh, status="pending", at=T0, outcomes=("failed",), duration_ms=50)
    stats = await (await api.get(path, headers=h)).json()
    assert (stats["deliveries"], stats["succeeded"], stats["failed"]) == (5, 3, 1)
    assert stats["success_rate"] == 0.75
    assert stats["p50_ms"] == 30.0 and 49.0 < stats["p99_ms"] <= 50.0
    # Each logged attempt starts one second after its delivery's time (see log_delivery).
    last = datetime.fromisoformat(stats["last_delivery_at"].replace("Z", "+00:00"))
    assert last == T0 + timedelta(seconds=1)


async def _delivery_messages(pool: asyncpg.Pool, webhook_id: str) -> list[bytes]:
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id",
        DELIVERIES,
        webhook_id.encode(),
    )
    return [r["value"] for r in rows]


async def test_recover_redelivers_at_most_10000_per_call_newest_first(
    api: TestClient, pool: asyncpg.Pool, org: str, owned: Owned
) -> None:
    h, wh = owned
    wid = uuid.UUID(wh["id"])
    # 10,001 dead deliveries a second apart, each with its attempt and body in the log.
    await pool.execute(
        "WITH d AS (SELECT gen_random_uuid() AS id, 'evt-' || i AS event_id,"
        " $3::timestamptz - make_interval(secs => i) AS at FROM generate_series(0, 10000) i),"
        " a AS (INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id,"
        " event_type, attempt, trigger, outcome, started_at, duration_ms, request_body,"
        " response_status, error) SELECT id, $1, $2, event_id, 'push', 1, 'auto', 'dead', at,"
        " 10, '{\"event\":\"push\"}', 500, 'http_status' FROM d)"
        " INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
        " first_at, last_at) SELECT id, $1, $2, event_id, 'push', 'dead', 1, at, at FROM d",
        wid,
        org,
        T0,
    )
    oldest = await pool.fetchval(
        "SELECT id FROM deliveries WHERE webhook_id = $1 ORDER BY first_at LIMIT 1", wid
    )
    try:
        resp = await api.post(
            f"/api/v1/webhooks/{wh['id']}/recover",
            json={"since": (T0 - timedelta(days=1)).isoformat()},
            headers=h,
        )
        assert resp.status == 202 and await resp.json() == {"count": 10_000}
        msgs = [DeliveryMessage.decode(r) for r in await _delivery_messages(pool, wh["id"])]
        assert len(msgs) == 10_000 and all(m.trigger == "recover" for m in msgs)
        assert str(oldest) not in {m.delivery_id for m in msgs}  # the newest first
    finally:
        # Nobody wants these 10,000 messages published by a later test's relay.
        await pool.execute(
            "DELETE FROM outbox WHERE topic = $1 AND key = $2", DELIVERIES, wh["id"].encode()
        )
