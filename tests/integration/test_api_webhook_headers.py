"""Custom headers on a webhook over HTTP (DESIGN.md section 12): validated, encrypted at
rest in PostgreSQL and on hookline.webhooks, read back masked."""

from __future__ import annotations

import uuid

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import WebhookRecord
from shared.crypto import SecretBox
from shared.kafka import WEBHOOKS
from tests.integration.api_support import admin, error_of, make_webhook, outbox_rows

TOKEN = "glpat-" + "s3cr3t" * 4
MASK = "\u2022\u2022\u2022\u2022"


async def test_each_bad_header_is_refused_naming_headers(
    api: TestClient, settings: Settings, org: str
) -> None:
    h = admin(settings)
    path = f"/api/v1/repos/{org}/widgets/webhooks"
    p = settings.header_prefix
    bad = [
        "not an object",
        ["X-A", "b"],
        {f"X-H{n}": "v" for n in range(11)},  # more than 10
        {"X A": "v"},  # not a token
        {"X-A:": "v"},
        {"": "v"},
        {"X-\u00e9": "v"},
        {"X-A": "a\r\nX-Injected: b"},
        {"X-A": "a\nb"},
        {"X-A": "\x00"},
        {"X-A": 5},
        {"X-A": "v" * 5000},
        {"Content-Type": "text/plain"},
        {"host": "evil.example"},
        {"User-Agent": "me"},
        {"X-Hub-Signature-256": "sha256=0"},
        {f"{p}-Signature-256": "sha256=0"},
        {"webhook-id": "x"},
        {"Webhook-Timestamp": "1"},
        {"webhook-signature": "v1,x"},
        {f"{p}-Delivery": "x"},
        {f"{p.lower()}-anything": "x"},
        {"X-A": "1", "x-a": "2"},
    ]
    # The same with good headers is accepted (so each refusal below is for its reason).
    good = {f"X-H{n}": "v\t1" for n in range(10)}
    resp = await api.post(path, json={"url": "http://127.0.0.1:9/hook", "headers": good}, headers=h)
    assert resp.status == 201, await resp.text()
    for headers in bad:
        body = {"url": "http://127.0.0.1:9/hook", "headers": headers}
        error = await error_of(await api.post(path, json=body, headers=h), 422)
        assert error["field"] == "headers", (headers, error)
    wid = (await make_webhook(api, h, org))["id"]
    for headers in bad:
        resp = await api.patch(f"/api/v1/webhooks/{wid}", json={"headers": headers}, headers=h)
        assert (await error_of(resp, 422))["field"] == "headers", headers
    # A masked value with nothing held to keep.
    resp = await api.patch(f"/api/v1/webhooks/{wid}", json={"headers": {"X-B": MASK}}, headers=h)
    assert (await error_of(resp, 422))["field"] == "headers"


async def test_values_are_encrypted_at_rest_and_read_back_masked(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    h = admin(settings)
    headers = {"X-Gitlab-Token": TOKEN, "X-Team": "payments"}
    resp = await api.post(
        f"/api/v1/repos/{org}/widgets/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "headers": headers},
        headers=h,
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    wid = created["id"]
    assert created["headers"] == {"X-Gitlab-Token": MASK, "X-Team": MASK}
    got = await (await api.get(f"/api/v1/webhooks/{wid}", headers=h)).json()
    assert got["headers"] == {"X-Gitlab-Token": MASK, "X-Team": MASK}
    listed = await (await api.get(f"/api/v1/repos/{org}/widgets/webhooks", headers=h)).json()
    assert listed["webhooks"][0]["headers"] == got["headers"]

    # In PostgreSQL: sealed, not the value.
    box = SecretBox(settings.secret_key)
    row = await pool.fetchrow("SELECT * FROM webhooks WHERE id = $1", uuid.UUID(wid))
    assert TOKEN not in orjson.dumps(dict(row), default=str).decode()
    stored = row["headers"]
    assert set(stored) == set(headers)
    assert {k: box.open(v.encode()) for k, v in stored.items()} == headers
    # On hookline.webhooks (through the outbox): sealed too.
    [value] = await outbox_rows(pool, WEBHOOKS, wid)
    assert TOKEN not in orjson.dumps(value).decode()
    record = WebhookRecord.decode(orjson.dumps(value))
    assert box.open(record.headers["X-Gitlab-Token"].encode()) == TOKEN

    # A PATCH replaces them whole; a masked value keeps the one held.
    resp = await api.patch(
        f"/api/v1/webhooks/{wid}",
        json={"headers": {"X-Gitlab-Token": MASK, "X-New": "n"}},
        headers=h,
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["headers"] == {"X-Gitlab-Token": MASK, "X-New": MASK}
    stored = await pool.fetchval("SELECT headers FROM webhooks WHERE id = $1", uuid.UUID(wid))
    assert {k: box.open(v.encode()) for k, v in stored.items()} == {
        "X-Gitlab-Token": TOKEN,
        "X-New": "n",
    }
    resp = await api.patch(f"/api/v1/webhooks/{wid}", json={"headers": None}, headers=h)
    assert (await resp.json())["headers"] == {}
