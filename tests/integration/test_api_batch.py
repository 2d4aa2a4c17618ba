"""Batch ingest: each event answered as the single route would have, the accepted ones
written to the outbox in one transaction."""

from __future__ import annotations

import dataclasses

import asyncpg
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import decode_event
from shared.kafka import EVENTS
from tests.integration.api_support import (
    admin,
    api_client,
    error_of,
    new_repo,
    outbox_rows,
)


async def test_each_event_gets_the_single_routes_answer(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo, other_repo = new_repo(), new_repo()
    first = await api.post(
        f"/api/v1/repos/{org}/{other_repo}/events",
        json={"event": "push", "id": "taken", "payload": {}},
        headers=owner,
    )
    assert first.status == 202
    events = [
        {"org": org, "repo": repo, "event": "push", "id": "a", "payload": {"n": 1}},
        {"org": org, "repo": repo, "event": "pull_request", "action": "opened", "payload": {}},
        {"org": org, "repo": repo, "event": "nope", "payload": {}},
        {"org": org + "-other", "repo": repo, "event": "push", "payload": {}},
        {"org": org, "repo": repo, "event": "push", "id": "a", "payload": {"n": 2}},
        {"org": org, "repo": repo, "event": "push", "id": "taken", "payload": {}},
        "not an object",
    ]
    resp = await api.post("/api/v1/events/batch", json={"events": events}, headers=owner)
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert [r["status"] for r in results] == [202, 202, 422, 404, 200, 409, 422]
    assert results[0]["event_id"] == "a" and results[4]["duplicate"] is True
    assert results[2]["error"]["field"] == "event"
    assert results[5]["error"]["field"] == "id"
    published = [decode_event(orjson_bytes) for orjson_bytes in await _values(pool, org, repo)]
    assert sorted(e.id for e in published) == sorted(["a", results[1]["event_id"]])
    assert next(e for e in published if e.id == "a").payload == {"n": 1}
    # Sent again, the whole batch is duplicates: nothing more is published.
    again = await api.post("/api/v1/events/batch", json={"events": events[:2]}, headers=owner)
    assert [r["status"] for r in (await again.json())["results"]] == [200, 202]
    assert len(await _values(pool, org, repo)) == 3


async def _values(pool: asyncpg.Pool, org: str, repo: str) -> list[bytes]:
    import orjson

    return [orjson.dumps(v) for v in await outbox_rows(pool, EVENTS, f"{org}/{repo}")]


async def test_the_batch_itself_is_validated(api: TestClient, settings: Settings) -> None:
    h = admin(settings)
    bodies: list[dict[str, object]] = [{"events": []}, {"events": {}}, {"events": [{}] * 1001}]
    for body in [*bodies, {"x": 1}]:
        err = await error_of(await api.post("/api/v1/events/batch", json=body, headers=h), 422)
        assert err["field"] in ("events", "x")


async def test_the_ingest_limit_counts_each_event(provisioned: Settings, org: str) -> None:
    limited = dataclasses.replace(provisioned, ingest_rate_per_org=3)
    async with api_client(limited) as client:
        events = [{"org": org, "repo": "r", "event": "push", "payload": {}} for _ in range(5)]
        resp = await client.post(
            "/api/v1/events/batch", json={"events": events}, headers=admin(limited)
        )
        statuses = [r["status"] for r in (await resp.json())["results"]]
        assert statuses == [202, 202, 202, 429, 429]
