"""Tokens: admin-only creation and revocation, 401 for missing/bad/revoked tokens."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
from aiohttp.test_utils import TestClient

from shared.config import Settings
from tests.integration.api_support import (
    admin,
    assert_each_refused_naming,
    bearer,
    error_of,
    org_token,
)


async def test_create_token_shows_it_once_and_it_authenticates(
    api: TestClient,
    settings: Settings,
    org: str,
) -> None:
    resp = await api.post(
        "/api/v1/tokens", json={"org": org, "name": "ci"}, headers=admin(settings)
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["org"] == org and body["name"] == "ci" and body["token"].startswith("hlt_")
    resp = await api.get(f"/api/v1/orgs/{org}/webhooks", headers=bearer(body["token"]))
    assert resp.status == 200 and (await resp.json()) == {"webhooks": []}


async def test_revoking_one_token_leaves_the_others(
    api: TestClient,
    settings: Settings,
    org: str,
) -> None:
    keep = await org_token(api, settings, org)
    resp = await api.post("/api/v1/tokens", json={"org": org, "name": "x"}, headers=admin(settings))
    token_id = (await resp.json())["id"]
    assert (await api.delete(f"/api/v1/tokens/{token_id}", headers=admin(settings))).status == 204
    # Revoking twice is harmless.
    assert (await api.delete(f"/api/v1/tokens/{token_id}", headers=admin(settings))).status == 204
    assert (await api.get(f"/api/v1/orgs/{org}/webhooks", headers=keep)).status == 200


async def test_revocation_is_immediate(api: TestClient, settings: Settings, org: str) -> None:
    resp = await api.post("/api/v1/tokens", json={"org": org, "name": "x"}, headers=admin(settings))
    created = await resp.json()
    headers = bearer(created["token"])
    assert (await api.get(f"/api/v1/orgs/{org}/webhooks", headers=headers)).status == 200
    assert (
        await api.delete(f"/api/v1/tokens/{created['id']}", headers=admin(settings))
    ).status == 204
    error = await error_of(await api.get(f"/api/v1/orgs/{org}/webhooks", headers=headers), 401)
    assert error["code"] == "unauthorized"


async def test_concurrent_requests_each_get_their_own_tokens_answer(
    api: TestClient, settings: Settings, org: str
) -> None:
    """Authentications arriving together are looked up in one statement: each must still
    get its own token's answer (two orgs, a revoked token, an unknown one)."""
    other = org + "-b"
    mine, theirs = await org_token(api, settings, org), await org_token(api, settings, other)
    resp = await api.post("/api/v1/tokens", json={"org": org, "name": "x"}, headers=admin(settings))
    revoked = await resp.json()
    await api.delete(f"/api/v1/tokens/{revoked['id']}", headers=admin(settings))
    callers = [mine, theirs, bearer(revoked["token"]), bearer("hlt_unknown")] * 8
    answers = await asyncio.gather(
        *(api.get(f"/api/v1/orgs/{org}/webhooks", headers=h) for h in callers)
    )
    # Another org's token sees a 404 here (tenancy), the revoked and unknown ones a 401.
    assert [a.status for a in answers] == [200, 404, 401, 401] * 8


async def test_missing_or_bad_token_is_401(api: TestClient) -> None:
    for headers in ({}, bearer("nope"), {"Authorization": "Basic abc"}, bearer("é-token")):
        resp = await api.get("/api/v1/orgs/acme/webhooks", headers=headers)
        await error_of(resp, 401)


async def test_org_token_on_admin_routes_is_403(
    api: TestClient,
    settings: Settings,
    org: str,
) -> None:
    headers = await org_token(api, settings, org)
    resp = await api.post("/api/v1/tokens", json={"org": org, "name": "x"}, headers=headers)
    assert (await error_of(resp, 403))["code"] == "forbidden"
    resp = await api.delete("/api/v1/tokens/00000000-0000-0000-0000-000000000000", headers=headers)
    await error_of(resp, 403)


async def test_token_validation(api: TestClient, settings: Settings) -> None:
    h = admin(settings)
    cases = [
        ({"name": "x"}, "org"),
        ({"org": "a/b", "name": "x"}, "org"),
        ({"org": "a\x00b", "name": "x"}, "org"),
        ({"org": "ab", "name": "x\x00"}, "name"),
        ({"org": "acme", "name": ""}, "name"),
        ({"org": "acme", "name": 5}, "name"),
        ({"org": "acme", "name": "x", "extra": 1}, "extra"),
        ([1, 2], "body"),
    ]
    await assert_each_refused_naming(api, "/api/v1/tokens", h, cases)
    resp = await api.post("/api/v1/tokens", data=b"{not json", headers=h)
    assert (await error_of(resp, 400))["code"] == "bad_request"
    resp = await api.post("/api/v1/tokens", data=b"", headers=h)
    await error_of(resp, 400)


async def test_revoke_unknown_token_is_404(api: TestClient, settings: Settings) -> None:
    h = admin(settings)
    await error_of(await api.delete("/api/v1/tokens/not-a-uuid", headers=h), 404)
    await error_of(
        await api.delete("/api/v1/tokens/00000000-0000-0000-0000-000000000000", headers=h), 404
    )


async def test_a_token_is_stored_only_as_its_sha256_hash(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    resp = await api.post(
        "/api/v1/tokens", json={"org": org, "name": "stored"}, headers=admin(settings)
    )
    assert resp.status == 201
    made = await resp.json()
    token = made["token"]
    row = await pool.fetchrow("SELECT * FROM tokens WHERE id = $1", uuid.UUID(made["id"]))
    assert row is not None
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    # Nothing else in the row holds the token, whole or in part.
    as_text = await pool.fetchval(
        "SELECT row_to_json(t)::text FROM tokens t WHERE id = $1", uuid.UUID(made["id"])
    )
    secret_part = token.removeprefix("hlt_")
    assert secret_part not in as_text and secret_part[:16] not in as_text
    assert set(row.keys()) == {"id", "org", "name", "token_hash", "created_at", "revoked_at"}
