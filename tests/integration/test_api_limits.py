"""Per-org limits: admin only, validated, and honoured by webhook creation, ingest and the
inbound edge."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.limits import RANGES
from tests.integration.api_support import (
    admin,
    api_client,
    edge_client,
    error_of,
    make_webhook,
    org_token,
)
from tests.integration.test_api_deliveries import log_delivery

NULLS = dict.fromkeys(RANGES)


async def test_limits_are_admin_only_and_validated(
    api: TestClient, settings: Settings, org: str
) -> None:
    path = f"/api/v1/orgs/{org}/limits"
    h = await org_token(api, settings, org)
    await error_of(await api.get(path, headers=h), 403)
    await error_of(await api.put(path, json={}, headers=h), 403)
    got = await (await api.get(path, headers=admin(settings))).json()
    assert got == {
        "org": org,
        **NULLS,
        "effective": {
            "max_webhooks_per_repo": settings.max_webhooks_per_repo,
            "max_org_webhooks": settings.max_org_webhooks,
            "retention_days": settings.retention_days,
            "ingest_rate_per_min": settings.ingest_rate_per_org,
            "inbound_rate_per_hook": settings.inbound_rate_per_hook,
            "inbound_rate_per_org": settings.inbound_rate_per_org,
        },
    }
    for body, field in (
        ({"max_org_webhooks": 0}, "max_org_webhooks"),
        ({"retention_days": "7"}, "retention_days"),
        ({"ingest_rate_per_min": True}, "ingest_rate_per_min"),
        ({"colour": 1}, "colour"),
    ):
        err = await error_of(await api.put(path, json=body, headers=admin(settings)), 422)
        assert err["field"] == field
    put = await api.put(path, json={"retention_days": 7}, headers=admin(settings))
    body = await put.json()
    assert body["retention_days"] == 7 and body["effective"]["retention_days"] == 7
    assert body["max_org_webhooks"] is None
    # A PUT sets every field: what it leaves out goes back to the default.
    put = await api.put(path, json={"max_org_webhooks": 3}, headers=admin(settings))
    assert (await put.json())["retention_days"] is None


async def test_webhook_counts_follow_the_orgs_limits(
    api: TestClient, settings: Settings, org: str, owner: dict[str, str]
) -> None:
    path = f"/api/v1/orgs/{org}/limits"
    limits = {"max_webhooks_per_repo": 2, "max_org_webhooks": 1}
    assert (await api.put(path, json=limits, headers=admin(settings))).status == 200
    for _ in range(2):
        await make_webhook(api, owner, org, "widgets")
    over = await api.post(
        f"/api/v1/repos/{org}/widgets/webhooks",
        json={"url": "http://127.0.0.1:9/owner", "events": ["push"]},
        headers=owner,
    )
    assert "limit is 2" in (await error_of(over, 409))["message"]
    await make_webhook(api, owner, org, None)
    over = await api.post(
        f"/api/v1/orgs/{org}/webhooks",
        json={"url": "http://127.0.0.1:9/owner", "events": ["push"]},
        headers=owner,
    )
    assert "limit is 1" in (await error_of(over, 409))["message"]
    inbound = f"/api/v1/orgs/{org}/inbound-webhooks"
    assert (await api.post(inbound, json={"name": "a"}, headers=owner)).status == 201
    await error_of(await api.post(inbound, json={"name": "b"}, headers=owner), 409)


async def test_org_level_webhooks_have_a_default_limit(provisioned: Settings, org: str) -> None:
    two = dataclasses.replace(provisioned, max_org_webhooks=2)
    async with api_client(two) as client:
        h = admin(two)
        for _ in range(2):
            await make_webhook(client, h, org, None)
        over = await client.post(
            f"/api/v1/orgs/{org}/webhooks",
            json={"url": "http://127.0.0.1:9/h", "events": ["push"]},
            headers=h,
        )
        await error_of(over, 409)


async def test_ingest_and_inbound_rates_follow_the_orgs_limits(
    api: TestClient, settings: Settings, org: str, owner: dict[str, str]
) -> None:
    limits = {"ingest_rate_per_min": 2, "inbound_rate_per_hook": 3}
    put = await api.put(f"/api/v1/orgs/{org}/limits", json=limits, headers=admin(settings))
    assert put.status == 200
    body = {"event": "push", "payload": {}}
    statuses = [
        (await api.post(f"/api/v1/repos/{org}/r/events", json=body, headers=owner)).status
        for _ in range(3)
    ]
    assert statuses == [202, 202, 429]
    created = await api.post(
        f"/api/v1/repos/{org}/r/inbound-webhooks",
        json={"name": "n", "verify": "none"},
        headers=owner,
    )
    hook = await created.json()
    async with edge_client(settings) as edge:
        codes = [(await edge.post(f"/hooks/in/{hook['id']}", json={})).status for _ in range(4)]
    assert codes == [202, 202, 202, 429]


async def test_changes_and_recovers_are_limited_per_org(provisioned: Settings, org: str) -> None:
    tight = dataclasses.replace(provisioned, manage_rate_per_org=4, recover_rate_per_org=1)
    async with api_client(tight) as client:
        h = await org_token(client, tight, org)
        hook = await make_webhook(client, h, org, "widgets")  # 1
        recover = f"/api/v1/webhooks/{hook['id']}/recover"
        since = {"since": "2026-01-01T00:00:00Z"}
        assert (await client.post(recover, json=since, headers=h)).status == 202  # 2
        resp = await client.post(recover, json=since, headers=h)  # 3: over the recover limit
        assert "recover calls" in (await error_of(resp, 429))["message"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert (await client.post(f"/api/v1/webhooks/{hook['id']}/ping", headers=h)).status == 202
        resp = await client.patch(f"/api/v1/webhooks/{hook['id']}", json={}, headers=h)  # 5
        assert "4 changes a minute" in (await error_of(resp, 429))["message"]
        # Reads are not limited, nor is the admin.
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=h)).status == 200
        await make_webhook(client, admin(tight), org, "widgets")


async def test_a_redeliver_is_a_change_and_a_recovering_patch_a_recover_call(
    provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    tight = dataclasses.replace(provisioned, manage_rate_per_org=3, recover_rate_per_org=1)
    async with api_client(tight) as client:
        h = await org_token(client, tight, org)
        hook = await make_webhook(client, h, org, "widgets")  # change 1
        delivery = await log_delivery(pool, hook, status="dead", at=datetime.now(UTC))
        path = f"/api/v1/webhooks/{hook['id']}"
        since = {"active": True, "recover_since": "2026-01-01T00:00:00Z"}
        assert (await client.patch(path, json=since, headers=h)).status == 202  # change 2
        # A second re-enabling PATCH that recovers is over the recover limit, as
        # POST .../recover would be: it may send 10,000 deliveries again too.
        resp = await client.patch(path, json=since, headers=h)
        assert "recover calls" in (await error_of(resp, 429))["message"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        redeliver = f"/api/v1/deliveries/{delivery}/redeliver"
        # The refused PATCH counted as change 3: a redeliver is one change more.
        resp = await client.post(redeliver, headers=h)
        assert "3 changes a minute" in (await error_of(resp, 429))["message"]
        # The admin is not limited.
        assert (await client.post(redeliver, headers=admin(tight))).status == 202
