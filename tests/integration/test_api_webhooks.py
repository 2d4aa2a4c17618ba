"""Webhooks over HTTP: CRUD on repo and org paths, tenancy, limits, ping, rotation."""

from __future__ import annotations

import dataclasses

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import DeliveryMessage, delivery_id_for
from shared.core.ssrf import Allowlist
from shared.kafka import DELIVERIES, WEBHOOKS
from tests.integration.api_support import (
    admin,
    api_client,
    assert_each_refused_naming,
    error_of,
    make_webhook,
    org_token,
    outbox_rows,
)


async def test_repo_webhook_crud(api: TestClient, org: str, owner: dict[str, str]) -> None:
    created = await make_webhook(api, owner, org, events=["pull_request", "push"], timeout_s=5)
    assert created["secret"].startswith("whsec_")
    assert created["scope"] == {"org": org, "repo": "widgets"}
    assert created["events"] == ["pull_request", "push"] and created["active"] is True
    wid = created["id"]

    listed = await (await api.get(f"/api/v1/repos/{org}/widgets/webhooks", headers=owner)).json()
    assert [w["id"] for w in listed["webhooks"]] == [wid]
    assert "secret" not in listed["webhooks"][0]

    got = await api.get(f"/api/v1/webhooks/{wid}", headers=owner)
    assert got.status == 200 and "secret" not in await got.json()

    resp = await api.patch(
        f"/api/v1/webhooks/{wid}", json={"active": False, "description": "off"}, headers=owner
    )
    assert resp.status == 200
    patched = await resp.json()
    assert patched["active"] is False and patched["description"] == "off"
    assert "secret" not in patched

    assert (await api.delete(f"/api/v1/webhooks/{wid}", headers=owner)).status == 204
    await error_of(await api.get(f"/api/v1/webhooks/{wid}", headers=owner), 404)
    await error_of(await api.delete(f"/api/v1/webhooks/{wid}", headers=owner), 404)


async def test_org_webhooks_are_listed_apart_from_repo_ones(
    api: TestClient,
    settings: Settings,
    org: str,
) -> None:
    h = admin(settings)
    org_level = await make_webhook(api, h, org, repo=None)
    assert org_level["scope"] == {"org": org, "repo": None}
    await make_webhook(api, h, org)
    listed = await (await api.get(f"/api/v1/orgs/{org}/webhooks", headers=h)).json()
    assert [w["id"] for w in listed["webhooks"]] == [org_level["id"]]


async def test_another_orgs_webhook_is_404(
    api: TestClient,
    settings: Settings,
    org: str,
) -> None:
    mine = await org_token(api, settings, org)
    theirs = await org_token(api, settings, org + "-other")
    wid = (await make_webhook(api, mine, org))["id"]
    for method, path, body in [
        ("GET", f"/api/v1/webhooks/{wid}", None),
        ("PATCH", f"/api/v1/webhooks/{wid}", {"url": "nope"}),
        ("DELETE", f"/api/v1/webhooks/{wid}", None),
        ("POST", f"/api/v1/webhooks/{wid}/ping", None),
        ("POST", f"/api/v1/webhooks/{wid}/rotate-secret", None),
        ("GET", f"/api/v1/webhooks/{wid}/deliveries", None),
        ("GET", f"/api/v1/webhooks/{wid}/stats", None),
        ("POST", f"/api/v1/webhooks/{wid}/recover", {"since": "2024-01-01T00:00:00Z"}),
        ("GET", f"/api/v1/repos/{org}/widgets/webhooks", None),
        ("POST", f"/api/v1/repos/{org}/widgets/webhooks", {"url": "http://127.0.0.1/"}),
        ("GET", f"/api/v1/orgs/{org}/webhooks", None),
        ("POST", f"/api/v1/repos/{org}/widgets/events", {"event": "push", "payload": {}}),
    ]:
        resp = await api.request(method, path, json=body, headers=theirs)
        assert (await error_of(resp, 404))["code"] == "not_found", (method, path)
    # Still there for its owner.
    assert (await api.get(f"/api/v1/webhooks/{wid}", headers=mine)).status == 200


async def test_non_uuid_ids_are_404(api: TestClient, settings: Settings) -> None:
    h = admin(settings)
    for path in ("/api/v1/webhooks/xyz", "/api/v1/webhooks/123/stats", "/api/v1/deliveries/zz"):
        await error_of(await api.get(path, headers=h), 404)
    await error_of(await api.post("/api/v1/deliveries/zz/redeliver", headers=h), 404)
    # Names that cannot exist in a path: an encoded slash, a NUL.
    await error_of(await api.get("/api/v1/repos/a/%2F/webhooks", headers=h), 404)
    await error_of(await api.get("/api/v1/orgs/%00/webhooks", headers=h), 404)


async def test_validation_names_the_field(api: TestClient, settings: Settings, org: str) -> None:
    h = admin(settings)
    path = f"/api/v1/repos/{org}/widgets/webhooks"
    cases = [
        ({"events": ["push"]}, "url"),
        ({"url": "ftp://127.0.0.1/", "events": ["push"]}, "url"),
        ({"url": "http://10.0.0.1/", "events": ["push"]}, "url"),  # SSRF: private address
        ({"url": "http://127.0.0.1/", "events": ["nope"]}, "events"),
        ({"url": "http://127.0.0.1/", "events": []}, "events"),
        ({"url": "http://127.0.0.1/", "events": ["push"], "timeout_s": 99}, "timeout_s"),
        ({"url": "http://127.0.0.1/", "events": ["push"], "content_type": "xml"}, "content_type"),
        ({"url": "http://127.0.0.1/", "events": ["push"], "bogus": 1}, "bogus"),
        ("just a string", "body"),
    ]
    await assert_each_refused_naming(api, path, h, cases)
    await error_of(await api.post(path, data=b"{", headers=h), 400)
    wid = (await make_webhook(api, h, org))["id"]
    resp = await api.patch(f"/api/v1/webhooks/{wid}", json={"active": "yes"}, headers=h)
    assert (await error_of(resp, 422))["field"] == "active"


async def test_per_repo_limit_is_409(provisioned: Settings, org: str) -> None:
    small = dataclasses.replace(provisioned, max_webhooks_per_repo=2)
    async with api_client(small) as client:
        h = admin(small)
        await make_webhook(client, h, org)
        await make_webhook(client, h, org)
        resp = await client.post(
            f"/api/v1/repos/{org}/widgets/webhooks",
            json={"url": "http://127.0.0.1/", "events": ["push"]},
            headers=h,
        )
        assert (await error_of(resp, 409))["code"] == "conflict"
        # Another repo of the same org is not affected.
        await make_webhook(client, h, org, repo="other")


async def test_ping_writes_one_single_shot_delivery(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    wid = (await make_webhook(api, owner, org))["id"]
    resp = await api.post(f"/api/v1/webhooks/{wid}/ping", headers=owner)
    assert resp.status == 202
    delivery_id = (await resp.json())["delivery_id"]
    rows = await outbox_rows(pool, DELIVERIES, wid)
    assert len(rows) == 1
    msg = DeliveryMessage.decode(await _raw(pool, wid))
    assert msg.delivery_id == delivery_id == delivery_id_for(msg.event_id, wid)
    assert (msg.event_type, msg.trigger, msg.single, msg.attempt) == ("ping", "ping", True, 1)
    assert msg.body["event"] == "ping" and msg.body["hook_id"] == wid and msg.org == org
    assert msg.body["repository"]["full_name"] == f"{org}/widgets"


async def _raw(pool: asyncpg.Pool, wid: str) -> bytes:
    raw: bytes = await pool.fetchval(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id DESC LIMIT 1",
        DELIVERIES,
        wid.encode(),
    )
    return raw


async def test_rotate_secret(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    created = await make_webhook(api, owner, org)
    resp = await api.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=owner)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"secret", "previous_expires_at"}
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    # create, rotate: two records on the compacted topic, the last one with both secrets.
    records = await outbox_rows(pool, WEBHOOKS, created["id"])
    assert len(records) == 2 and records[-1]["previous_secret_enc"] is not None


async def test_unknown_route_and_wrong_method_answer_json(
    api: TestClient,
    settings: Settings,
) -> None:
    h = admin(settings)
    assert (await error_of(await api.get("/api/v1/nope", headers=h), 404))["code"] == "not_found"
    await error_of(await api.get("/nope"), 404)
    resp = await api.put("/api/v1/tokens", headers=h)
    assert (await error_of(resp, 405))["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


async def test_a_blocked_url_is_refused_without_saying_where_it_resolves(
    provisioned: Settings, org: str
) -> None:
    strict = dataclasses.replace(provisioned, allowed_targets=Allowlist.parse(""))
    async with api_client(strict) as client:
        for url in ("http://localhost:9/hook", "http://127.0.0.1:9/hook", "http://[::1]:9/"):
            resp = await client.post(
                f"/api/v1/repos/{org}/r/webhooks",
                json={"url": url, "events": ["push"]},
                headers=admin(strict),
            )
            error = await error_of(resp, 422)
            assert error["field"] == "url" and "non-public address" in error["message"]
            for revealing in ("127.0.0.1", "::1", "loopback"):
                assert revealing not in error["message"], error


async def test_defaults_users_expect(api: TestClient, settings: Settings, org: str) -> None:
    h = admin(settings)
    resp = await api.post(
        f"/api/v1/repos/{org}/widgets/webhooks",
        json={"url": "http://127.0.0.1:9/h", "secret": "8-chars!"},
        headers=h,
    )
    created = await resp.json()
    assert resp.status == 201, created
    assert created["events"] == ["push"] and created["secret"] == "8-chars!"
    short = await api.post(
        f"/api/v1/repos/{org}/widgets/webhooks",
        json={"url": "http://127.0.0.1:9/h", "secret": "7-chars"},
        headers=h,
    )
    assert (await error_of(short, 422))["field"] == "secret"


async def test_repo_scoped_paths_are_aliases(
    api: TestClient, org: str, owner: dict[str, str]
) -> None:
    hook = await make_webhook(api, owner, org, "widgets")
    scoped = f"/api/v1/repos/{org}/widgets/webhooks/{hook['id']}"
    got = await api.get(scoped, headers=owner)
    assert got.status == 200 and (await got.json())["id"] == hook["id"]
    patched = await api.patch(scoped, json={"description": "via repo path"}, headers=owner)
    assert (await patched.json())["description"] == "via repo path"
    assert (await api.post(scoped + "/ping", headers=owner)).status == 202
    # Another repo's (or org's) path does not reach it.
    for wrong in (
        f"/api/v1/repos/{org}/other/webhooks/{hook['id']}",
        f"/api/v1/repos/{org}x/widgets/webhooks/{hook['id']}",
    ):
        await error_of(await api.get(wrong, headers=owner), 404)
        patched = await api.patch(wrong, json={"description": "not here"}, headers=owner)
        await error_of(patched, 404)
        await error_of(await api.delete(wrong, headers=owner), 404)
        await error_of(await api.post(wrong + "/ping", headers=owner), 404)
    got = await (await api.get(scoped, headers=owner)).json()
    assert got["description"] == "via repo path"  # the wrong paths changed nothing
    assert (await api.delete(scoped, headers=owner)).status == 204
    await error_of(await api.get(f"/api/v1/webhooks/{hook['id']}", headers=owner), 404)


async def test_test_sends_the_catalog_example_to_this_webhook_alone(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    hook = await make_webhook(api, owner, org, "widgets")
    resp = await api.post(
        f"/api/v1/webhooks/{hook['id']}/test", json={"event": "pull_request.opened"}, headers=owner
    )
    assert resp.status == 202, await resp.text()
    delivery_id = (await resp.json())["delivery_id"]
    [sent] = [
        DeliveryMessage.decode(orjson.dumps(v))
        for v in await outbox_rows(pool, DELIVERIES, hook["id"])
    ]
    assert sent.delivery_id == delivery_id and sent.trigger == "test" and sent.single
    assert sent.event_type == "pull_request.opened"
    assert sent.body["type"] == "pull_request.opened" and sent.body["number"] == 42
    assert sent.body["repository"]["full_name"] == f"{org}/widgets"
    plain = await api.post(f"/api/v1/webhooks/{hook['id']}/test", headers=owner)
    assert plain.status == 202
    for body, field in (
        ({"event": "nope"}, "event"),
        ({"event": "ping"}, "event"),
        ({"x": 1}, "x"),
    ):
        bad = await api.post(f"/api/v1/webhooks/{hook['id']}/test", json=body, headers=owner)
        assert (await error_of(bad, 422))["field"] == field
