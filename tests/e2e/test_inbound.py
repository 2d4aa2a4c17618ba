"""Inbound webhooks end to end: calls to `services.inbound` processes become events that
the relay, matcher and sender deliver to the repo's or org's outbound webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from shared.config import Settings
from tests.e2e.conftest import Pipeline, free_port, start_pipeline
from tests.e2e.harness import Receiver, ServiceProcess, eventually, wait_ready
from tests.e2e.test_pipeline import Api

RATE_PER_HOOK = 100


@pytest.fixture(scope="module")
async def inbound_pipeline(
    provisioned: Settings, service_env: dict[str, str]
) -> AsyncIterator[Pipeline]:
    p = await start_pipeline(
        service_env, senders=1, HOOKLINE_INBOUND_RATE_PER_HOOK=str(RATE_PER_HOOK)
    )
    yield p
    p.stop()


async def start_inbound(pipeline: Pipeline) -> tuple[ServiceProcess, str]:
    """One more inbound process on a port of its own; returns it and its base URL."""
    port = free_port()
    proc = pipeline.start("inbound", HOOKLINE_INBOUND_PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    await wait_ready(base, [proc], what="the inbound edge's /readyz")
    return proc, base


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        text = await r.read()
        return r.status, (orjson.loads(text) if text else None), r.headers


async def inbound_hook(api: Api, org: str, repo: str | None, **fields: Any) -> dict[str, Any]:
    path = f"/repos/{org}/{repo}/inbound-webhooks" if repo else f"/orgs/{org}/inbound-webhooks"
    status, body = await api.call("POST", path, {"name": "ci", **fields})
    assert status == 201, body
    return body  # type: ignore[no-any-return]


def on_port(url: str, base: str) -> str:
    """The hook's public URL with the test process's address (HOOKLINE_PUBLIC_URL differs)."""
    return base + url[url.index("/hooks/in/") :]


async def test_the_readme_calls_reach_an_agent_action_webhook(
    inbound_pipeline: Pipeline, receiver: Receiver, org: str
) -> None:
    _, base = await start_inbound(inbound_pipeline)
    api = Api(inbound_pipeline.api_url)
    outbound = await api.webhook(org, "widgets", receiver.url("/agents"), events=["agent.action"])
    hook = await inbound_hook(api, org, "widgets", target="triage-agent")
    open_hook = await inbound_hook(api, org, "widgets", name="deploys", verify="none")

    # README: the call with X-Webhook-Secret, JSON.
    status, with_secret, _ = await post(
        on_port(hook["url"], base),
        b'{"message":"Build 812 failed on main","data":{"pipeline":812,"branch":"main"}}',
        {"X-Webhook-Secret": hook["secret"], "Content-Type": "application/json"},
    )
    assert status == 202, with_secret
    # README: the plain call, as `curl -d '{...}'` sends it (a form content type).
    status, plain, _ = await post(
        on_port(open_hook["url"], base),
        b'{"message":"Deploy finished"}',
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 202, plain
    # A wrong secret emits nothing.
    status, _, _ = await post(
        on_port(hook["url"], base), b"{}", {"X-Webhook-Secret": "whsec_wrong"}
    )
    assert status == 401

    got = await eventually(lambda: len(receiver.at("/agents")) >= 2 and receiver.at("/agents"))
    by_event = {r.json()["event_id"]: r for r in got}
    assert set(by_event) == {with_secret["event_id"], plain["event_id"]}
    first = by_event[with_secret["event_id"]]
    assert first.signatures_valid(outbound["secret"])
    assert first.headers["X-Hookline-Event"] == "agent.action"
    body = first.json()
    assert body["message"] == "Build 812 failed on main" and body["target"] == "triage-agent"
    assert body["data"]["data"] == {"pipeline": 812, "branch": "main"}
    assert body["repository"]["full_name"] == f"{org}/widgets"
    assert by_event[plain["event_id"]].json()["message"] == "Deploy finished"
    await asyncio.sleep(1.0)
    assert len(receiver.at("/agents")) == 2  # the refused call was never delivered

    status, page = await api.call("GET", f"/inbound-webhooks/{hook['id']}/invocations")
    assert [i["result"] for i in page["invocations"]] == ["unauthorized", "accepted"]


async def test_an_org_inbound_webhook_reaches_org_level_webhooks_only(
    inbound_pipeline: Pipeline, receiver: Receiver, org: str
) -> None:
    _, base = await start_inbound(inbound_pipeline)
    api = Api(inbound_pipeline.api_url)
    await api.webhook(org, None, receiver.url("/org-hook"), events=["pipeline.*"])
    await api.webhook(org, "some-repo", receiver.url("/repo-hook"), events=["*"])
    hook = await inbound_hook(api, org, None, event="pipeline.run_completed", verify="none")
    status, accepted, _ = await post(on_port(hook["url"], base), b'{"message":"nightly done"}', {})
    assert status == 202
    [got] = await eventually(lambda: receiver.at("/org-hook"), what="the org event")
    body = got.json()
    assert body["event_id"] == accepted["event_id"]
    assert body["event"] == "pipeline" and body["action"] == "run_completed"
    assert "repository" not in body and body["organization"]["login"] == org
    await asyncio.sleep(1.0)
    assert receiver.at("/repo-hook") == []


async def test_the_limit_holds_across_two_inbound_processes(
    inbound_pipeline: Pipeline, org: str
) -> None:
    (_, one), (_, two) = (
        await start_inbound(inbound_pipeline),
        await start_inbound(inbound_pipeline),
    )
    api = Api(inbound_pipeline.api_url)
    hook = await inbound_hook(api, org, "widgets", verify="none")
    statuses = []
    for n in range(RATE_PER_HOOK):
        status, _, _ = await post(on_port(hook["url"], (one, two)[n % 2]), b"{}", {})
        statuses.append(status)
    assert statuses == [202] * RATE_PER_HOOK
    for base in (one, two):
        status, error, headers = await post(on_port(hook["url"], base), b"{}", {})
        assert status == 429 and error["error"]["code"] == "rate_limited"
        assert 1 <= int(headers["Retry-After"]) <= 60


async def test_kill_9_of_the_inbound_edge_loses_no_accepted_call(
    inbound_pipeline: Pipeline, receiver: Receiver, org: str
) -> None:
    proc, base = await start_inbound(inbound_pipeline)
    api = Api(inbound_pipeline.api_url)
    await api.webhook(org, "widgets", receiver.url("/kill"), events=["agent.action"])
    hook = await inbound_hook(api, org, "widgets", verify="none")
    url = on_port(hook["url"], base)
    accepted: list[str] = []
    stop = asyncio.Event()

    async def caller() -> None:
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                try:
                    async with s.post(url, json={"message": "x"}) as r:
                        if r.status == 202:
                            accepted.append((await r.json())["event_id"])
                except (TimeoutError, aiohttp.ClientError, ConnectionError):
                    await asyncio.sleep(0.05)

    callers = [asyncio.create_task(caller()) for _ in range(8)]
    await eventually(lambda: len(accepted) >= 20, what="calls flowing")
    proc.kill9()
    killed_at = len(accepted)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*callers)
    assert killed_at >= 20 and len(accepted) <= RATE_PER_HOOK

    def delivered() -> set[str]:
        return {r.json()["event_id"] for r in receiver.at("/kill")}

    await eventually(lambda: set(accepted) <= delivered(), timeout=60, what="every accepted call")
