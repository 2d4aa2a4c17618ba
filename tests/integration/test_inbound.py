"""Inbound webhooks against real PostgreSQL: the management API and the public edge, each
served in-process, and what every call leaves in the invocation log and the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook as StandardWebhook

from shared.config import Settings
from shared.core.signing import github_signature
from shared.kafka import EVENTS
from tests.integration.api_support import (
    admin,
    edge_client,
    error_of,
    new_repo,
    org_token,
)


async def make_inbound(
    api: TestClient, headers: dict[str, str], org: str, repo: str | None, **fields: Any
) -> dict[str, Any]:
    path = (
        f"/api/v1/repos/{org}/{repo}/inbound-webhooks"
        if repo
        else (f"/api/v1/orgs/{org}/inbound-webhooks")
    )
    resp = await api.post(path, json={"name": "ci", **fields}, headers=headers)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


def path_of(hook: dict[str, Any]) -> str:
    return "/hooks/in/" + hook["id"]


async def events_of(pool: asyncpg.Pool, org: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND convert_from(key, 'UTF8') LIKE $2"
        " ORDER BY id",
        EVENTS,
        org + "%",
    )
    return [orjson.loads(r["value"]) for r in rows]


async def invocations(api: TestClient, h: dict[str, str], hook: dict[str, Any], **q: str) -> Any:
    resp = await api.get(f"/api/v1/inbound-webhooks/{hook['id']}/invocations", params=q, headers=h)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_create_shows_the_url_and_the_secret_once(
    api: TestClient, settings: Settings, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, "widgets", target="triage-bot")
    assert hook["url"] == f"{settings.public_url}/hooks/in/{hook['id']}"
    assert hook["id"].startswith("ih_") and len(hook["id"]) >= 3 + 22  # >= 128 random bits
    assert hook["secret"].startswith("whsec_")
    assert hook["event"] == "agent.action" and hook["verify"] == "secret_header"
    assert hook["scope"] == {"org": org, "repo": "widgets"} and hook["target"] == "triage-bot"
    assert hook["active"] is True and hook["last_triggered_at"] is None

    listed = await (
        await api.get(f"/api/v1/repos/{org}/widgets/inbound-webhooks", headers=owner)
    ).json()
    assert [x["id"] for x in listed["inbound_webhooks"]] == [hook["id"]]
    got = await (await api.get(f"/api/v1/inbound-webhooks/{hook['id']}", headers=owner)).json()
    for shown in (listed["inbound_webhooks"][0], got):
        assert "secret" not in shown and hook["secret"] not in orjson.dumps(shown).decode()


async def test_secret_is_encrypted_at_rest(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, "widgets", secret="my-own-secret-1")
    sealed = await pool.fetchval(
        "SELECT secret_enc FROM inbound_webhooks WHERE id = $1", hook["id"]
    )
    assert b"my-own-secret-1" not in bytes(sealed)
    assert hook["secret"] == "my-own-secret-1"


async def test_fields_are_validated_naming_the_field(
    api: TestClient, org: str, owner: dict[str, str]
) -> None:
    path = f"/api/v1/repos/{org}/widgets/inbound-webhooks"
    for body, field in (
        ({}, "name"),
        ({"name": "x", "event": "nope"}, "event"),
        ({"name": "x", "event": "ping"}, "event"),
        ({"name": "x", "verify": "maybe"}, "verify"),
        ({"name": "x", "secret": "short"}, "secret"),
        ({"name": "x", "colour": "red"}, "colour"),
    ):
        err = await error_of(await api.post(path, json=body, headers=owner), 422)
        assert err["field"] == field, (body, err)


async def test_another_orgs_inbound_webhook_is_404(
    api: TestClient, settings: Settings, org: str, owner: dict[str, str]
) -> None:
    other = await org_token(api, settings, org + "-other")
    hook = await make_inbound(api, owner, org, None)
    base = f"/api/v1/inbound-webhooks/{hook['id']}"
    for method, path in (
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("POST", base + "/rotate-secret"),
        ("POST", base + "/test"),
        ("GET", base + "/invocations"),
    ):
        resp = await api.request(method, path, json={"active": False}, headers=other)
        await error_of(resp, 404)
    await error_of(await api.get(f"/api/v1/orgs/{org}/inbound-webhooks", headers=other), 404)
    assert (await api.get(base, headers=owner)).status == 200


async def test_secret_header_call_becomes_an_event(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo, target="deploy-agent")
    resp = await edge.post(
        path_of(hook),
        json={"message": "deploy please", "data": {"env": "prod"}},
        headers={"X-Webhook-Secret": hook["secret"]},
    )
    assert resp.status == 202, await resp.text()
    event_id = (await resp.json())["event_id"]

    [event] = await events_of(pool, f"{org}/{repo}")
    assert event["id"] == event_id and event["type"] == "agent.action"
    assert (event["org"], event["repo"]) == (org, repo)
    payload = event["payload"]
    assert payload["message"] == "deploy please" and payload["target"] == "deploy-agent"
    assert payload["data"] == {"message": "deploy please", "data": {"env": "prod"}}
    assert payload["inbound"]["webhook_id"] == hook["id"] and payload["inbound"]["name"] == "ci"

    page = await invocations(api, owner, hook)
    [inv] = page["invocations"]
    assert (inv["result"], inv["status"], inv["event_id"], inv["test"]) == (
        "accepted",
        202,
        event_id,
        False,
    )
    assert inv["headers"]["X-Webhook-Secret"] == "[redacted]"
    assert hook["secret"] not in orjson.dumps(page).decode()
    assert orjson.loads(inv["body"])["message"] == "deploy please"
    assert inv["source_ip"] == "127.0.0.1"
    got = await (await api.get(f"/api/v1/inbound-webhooks/{hook['id']}", headers=owner)).json()
    assert got["last_triggered_at"] == inv["received_at"]


async def test_an_accepted_calls_event_keeps_every_character_of_its_data(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    """The log's batch travels as one JSON document; the event in the outbox must still be
    orjson's bytes of the message, a NUL, quotes and non-ASCII text included."""
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    data = {"message": 'café "ok" \\ ☕', "data": {"nul": "a\x00b", "clef": "𝄞", "n": 2.5}}
    resp = await edge.post(path_of(hook), json=data, headers={"X-Webhook-Secret": hook["secret"]})
    assert resp.status == 202, await resp.text()
    [raw] = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2", EVENTS, f"{org}/{repo}".encode()
    )
    event = orjson.loads(raw["value"])
    assert event["payload"]["data"] == data and event["payload"]["message"] == data["message"]
    assert orjson.dumps(event) == bytes(raw["value"])


async def test_a_wrong_or_missing_secret_is_401_logged_and_emits_nothing(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    wrong = await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": "whsec_nope"})
    assert "wrong" in (await error_of(wrong, 401))["message"]
    missing = await edge.post(path_of(hook), json={})
    assert "missing" in (await error_of(missing, 401))["message"]
    assert await events_of(pool, f"{org}/{repo}") == []
    page = await invocations(api, owner, hook, result="unauthorized")
    assert [i["status"] for i in page["invocations"]] == [401, 401]
    assert all(i["event_id"] is None for i in page["invocations"])


async def test_github_and_standard_signatures(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    gh = await make_inbound(api, owner, org, repo, verify="github", name="gh")
    body = orjson.dumps({"message": "signed"})
    signed = {
        "X-Hub-Signature-256": github_signature(gh["secret"], body),
        "Content-Type": "application/json",
    }
    assert (await edge.post(path_of(gh), data=body, headers=signed)).status == 202
    tampered = await edge.post(path_of(gh), data=body + b" ", headers=signed)
    await error_of(tampered, 401)

    std = await make_inbound(api, owner, org, repo, verify="standard", name="std")
    signer = StandardWebhook(std["secret"])
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signer.sign("msg_1", _utc(now), body.decode()),
        "Content-Type": "application/json",
    }
    first = await edge.post(path_of(std), data=body, headers=headers)
    assert first.status == 202, await first.text()
    # webhook-id is the idempotency key under `standard`: the same message again is a duplicate
    again = await edge.post(path_of(std), data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {**await first.json(), "duplicate": True}
    stale = dict(headers, **{"webhook-id": "msg_2", "webhook-timestamp": str(now - 301)})
    stale["webhook-signature"] = signer.sign("msg_2", _utc(now - 301), body.decode())
    assert (
        "5 minutes"
        in (await error_of(await edge.post(path_of(std), data=body, headers=stale), 401))["message"]
    )
    assert len(await events_of(pool, f"{org}/{repo}")) == 2


def _utc(epoch: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


async def test_none_accepts_any_call_only_when_asked_for(
    api: TestClient, edge: TestClient, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, "widgets", verify="none")
    assert (await edge.post(path_of(hook), json={"message": "hi"})).status == 202
    default = await make_inbound(api, owner, org, "widgets", name="default")
    await error_of(await edge.post(path_of(default), json={"message": "hi"}), 401)


async def test_idempotency_key_emits_one_event(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    headers = {"X-Webhook-Secret": hook["secret"], "Idempotency-Key": "build-42"}
    first = await edge.post(path_of(hook), json={"n": 1}, headers=headers)
    second = await edge.post(path_of(hook), json={"n": 2}, headers=headers)
    assert first.status == 202 and second.status == 200
    event_id = (await first.json())["event_id"]
    assert await second.json() == {"event_id": event_id, "duplicate": True}
    assert [e["id"] for e in await events_of(pool, f"{org}/{repo}")] == [event_id]
    results = [i["result"] for i in (await invocations(api, owner, hook))["invocations"]]
    assert results == ["duplicate", "accepted"]


async def test_disabled_is_403_and_logged_deleted_is_404(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    base = f"/api/v1/inbound-webhooks/{hook['id']}"
    patched = await api.patch(base, json={"active": False}, headers=owner)
    assert (await patched.json())["active"] is False
    secret = {"X-Webhook-Secret": hook["secret"]}
    err = await error_of(await edge.post(path_of(hook), json={}, headers=secret), 403)
    assert err["code"] == "disabled"
    [inv] = (await invocations(api, owner, hook))["invocations"]
    assert (inv["result"], inv["status"]) == ("disabled", 403)

    await api.patch(base, json={"active": True}, headers=owner)
    assert (await edge.post(path_of(hook), json={}, headers=secret)).status == 202
    assert (await api.delete(base, headers=owner)).status == 204
    await error_of(await edge.post(path_of(hook), json={}, headers=secret), 404)
    await error_of(await api.get(base, headers=owner), 404)
    assert len(await events_of(pool, f"{org}/{repo}")) == 1


async def test_bodies_that_are_refused(
    api: TestClient,
    edge: TestClient,
    settings: Settings,
    pool: asyncpg.Pool,
    org: str,
    owner: dict[str, str],
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    secret = {"X-Webhook-Secret": hook["secret"]}
    too_big = b'{"x":"' + b"a" * settings.max_payload_bytes + b'"}'
    await error_of(
        await edge.post(
            path_of(hook), data=too_big, headers={**secret, "Content-Type": "application/json"}
        ),
        413,
    )
    await error_of(
        await edge.post(
            path_of(hook), data=b"hello", headers={**secret, "Content-Type": "text/plain"}
        ),
        415,
    )
    await error_of(await edge.post(path_of(hook), json=[1, 2], headers=secret), 422)
    await error_of(
        await edge.post(
            path_of(hook), data=b"{nope", headers={**secret, "Content-Type": "application/json"}
        ),
        400,
    )
    results = [i["result"] for i in (await invocations(api, owner, hook))["invocations"]]
    assert results == ["invalid_payload", "invalid_payload", "invalid_payload", "too_large"]
    assert await events_of(pool, f"{org}/{repo}") == []
    await error_of(await edge.post("/hooks/in/ih_unknown", json={}), 404)


async def test_a_nul_in_a_refused_body_is_logged_and_fails_no_call_beside_it(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    """PostgreSQL's text refuses NUL: the log keeps it replaced, so the refused call is
    logged, and the calls written in the same statement are accepted."""
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo)
    headers = {"X-Webhook-Secret": hook["secret"], "Content-Type": "application/json"}
    bodies = [b'{"n": %d}' % n for n in range(10)]
    bodies[3] = b"{nope\x00"
    answers = await asyncio.gather(
        *(edge.post(path_of(hook), data=b, headers=headers) for b in bodies)
    )
    assert [a.status for a in answers] == [202] * 3 + [400] + [202] * 6
    logged = (await invocations(api, owner, hook))["invocations"]
    assert sorted(i["result"] for i in logged) == ["accepted"] * 9 + ["invalid_payload"]
    assert [i["body"] for i in logged if i["result"] == "invalid_payload"] == ["{nope\ufffd"]
    assert len(await events_of(pool, f"{org}/{repo}")) == 9


async def test_forms_and_curl_without_a_content_type(
    api: TestClient, edge: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    hook = await make_inbound(api, owner, org, repo, verify="none")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        await edge.post(path_of(hook), data=b"message=hi&tag=a&tag=b", headers=form)
    ).status == 202
    # What `curl -d '{"message":"x"}'` sends: JSON under a form content type.
    assert (await edge.post(path_of(hook), data=b'{"message":"x"}', headers=form)).status == 202
    wrapped = b"payload=" + b"%7B%22message%22%3A%22slack%22%7D"
    assert (await edge.post(path_of(hook), data=wrapped, headers=form)).status == 202
    data = [e["payload"]["data"] for e in await events_of(pool, f"{org}/{repo}")]
    assert data == [{"message": "hi", "tag": ["a", "b"]}, {"message": "x"}, {"message": "slack"}]


Hook = dict[str, Any]


@contextlib.asynccontextmanager
async def limited_edge(
    api: TestClient, settings: Settings, org: str, *, per_hook: int, per_org: int
) -> AsyncIterator[tuple[TestClient, dict[str, str], Hook, Hook]]:
    """An edge with these inbound rate limits, the headers of a token of `org`, and two
    unverified hooks of org/widgets, "one" and "two"."""
    limited = dataclasses.replace(
        settings, inbound_rate_per_hook=per_hook, inbound_rate_per_org=per_org
    )
    h = await org_token(api, settings, org)
    one = await make_inbound(api, h, org, "widgets", verify="none", name="one")
    two = await make_inbound(api, h, org, "widgets", verify="none", name="two")
    async with edge_client(limited) as edge:
        yield edge, h, one, two


async def test_rate_limit_per_hook_and_per_org(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str
) -> None:
    async with limited_edge(api, settings, org, per_hook=3, per_org=5) as (edge, h, one, two):
        codes = [(await edge.post(path_of(one), json={})).status for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        refused = await edge.post(path_of(one), json={})
        assert (await error_of(refused, 429))["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # The hook's refusals did not spend the org's budget: 2 more fit, then the org's limit.
        codes = [(await edge.post(path_of(two), json={})).status for _ in range(2)]
        assert codes == [202, 202]
        over_org = await error_of(await edge.post(path_of(two), json={}), 429)
        assert "org's limit of 5" in over_org["message"]
    page = await invocations(api, h, one, result="rate_limited")
    assert len(page["invocations"]) == 2


async def test_test_route_goes_the_same_way_and_is_marked(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, None, event="pipeline.run_completed")
    resp = await api.post(
        f"/api/v1/inbound-webhooks/{hook['id']}/test",
        json={"payload": {"message": "t"}},
        headers=owner,
    )
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    [event] = await events_of(pool, org)
    assert event["id"] == body["event_id"] and event["repo"] is None
    assert event["type"] == "pipeline.run_completed"
    assert event["payload"]["inbound"]["invocation_id"] == body["invocation_id"]
    [inv] = (await invocations(api, owner, hook))["invocations"]
    assert inv["test"] is True and inv["id"] == body["invocation_id"]
    empty = await api.post(f"/api/v1/inbound-webhooks/{hook['id']}/test", headers=owner)
    assert empty.status == 202


async def test_rotate_secret_replaces_it(
    api: TestClient, edge: TestClient, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, "widgets")
    resp = await api.post(f"/api/v1/inbound-webhooks/{hook['id']}/rotate-secret", headers=owner)
    new = (await resp.json())["secret"]
    assert new != hook["secret"]
    await error_of(
        await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": hook["secret"]}), 401
    )
    assert (
        await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": new})
    ).status == 202


async def test_invocations_page_with_a_cursor(
    api: TestClient, edge: TestClient, org: str, owner: dict[str, str]
) -> None:
    hook = await make_inbound(api, owner, org, "widgets", verify="none")
    for n in range(5):
        assert (await edge.post(path_of(hook), json={"n": n})).status == 202
    seen: list[int] = []
    cursor = None
    while True:
        q = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await invocations(api, owner, hook, **q)
        seen += [orjson.loads(i["body"])["n"] for i in page["invocations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]
    err = await error_of(
        await api.get(
            f"/api/v1/inbound-webhooks/{hook['id']}/invocations?result=maybe", headers=owner
        ),
        422,
    )
    assert err["field"] == "result"


async def test_admin_sees_every_org(api: TestClient, settings: Settings, org: str) -> None:
    hook = await make_inbound(api, admin(settings), org, None)
    got = await api.get(f"/api/v1/inbound-webhooks/{hook['id']}", headers=admin(settings))
    assert got.status == 200


async def test_concurrent_calls_counted_in_one_batch_admit_exactly_the_limit(
    api: TestClient, settings: Settings, org: str
) -> None:
    async with limited_edge(api, settings, org, per_hook=5, per_org=7) as (edge, _h, one, two):

        async def call(hook: dict[str, Any]) -> int:
            return (await edge.post(path_of(hook), json={})).status

        statuses = await asyncio.gather(*(call(hook) for hook in [one, two] * 12))
    by_hook = [statuses[0::2], statuses[1::2]]
    assert [s.count(202) for s in by_hook] in ([5, 2], [2, 5], [4, 3], [3, 4])
    assert statuses.count(202) == 7 and statuses.count(429) == 17
