"""Event ingest: one transaction (events row + outbox), idempotency by id, limits."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.core.messages import decode_event, make_event
from shared.ingest import write_events
from shared.kafka import EVENTS
from tests.integration.api_support import (
    admin,
    api_client,
    assert_each_refused_naming,
    error_of,
    new_repo,
    org_token,
    outbox_rows,
)


async def test_ingest_writes_the_event_to_the_outbox(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    resp = await api.post(
        f"/api/v1/repos/{org}/{repo}/events",
        json={"event": "pull_request", "action": "opened", "payload": {"number": 7}},
        headers=owner,
    )
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2", EVENTS, f"{org}/{repo}".encode()
    )
    assert len(rows) == 1
    event = decode_event(rows[0]["value"])
    assert (event.id, event.type, event.org, event.repo) == (
        event_id,
        "pull_request.opened",
        org,
        repo,
    )
    assert event.payload == {"number": 7}
    stored = await pool.fetchrow("SELECT org, repo, type FROM events WHERE id = $1", event_id)
    assert tuple(stored) == (org, repo, "pull_request.opened")


async def test_repeated_id_answers_200_and_enqueues_nothing_more(
    api: TestClient, settings: Settings, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    body = {"event": "push", "id": f"{org}-evt-1", "payload": {"ref": "refs/heads/main"}}
    first = await api.post(f"/api/v1/repos/{org}/{repo}/events", json=body, headers=owner)
    second = await api.post(f"/api/v1/repos/{org}/{repo}/events", json=body, headers=owner)
    assert (first.status, second.status) == (202, 200)
    assert (await first.json())["event_id"] == (await second.json())["event_id"] == body["id"]
    assert len(await outbox_rows(pool, EVENTS, f"{org}/{repo}")) == 1
    # The same id from another repository is refused, not silently dropped.
    resp = await api.post(f"/api/v1/repos/{org}/{new_repo()}/events", json=body, headers=owner)
    assert (await error_of(resp, 409))["field"] == "id"
    # Ids are per org: another tenant's use of the same id neither blocks nor shows.
    other = org + "-b"
    h2 = await org_token(api, settings, other)
    resp = await api.post(f"/api/v1/repos/{other}/{repo}/events", json=body, headers=h2)
    assert resp.status == 202 and (await resp.json())["event_id"] == body["id"]


async def test_invalid_events_name_the_field(api: TestClient, settings: Settings, org: str) -> None:
    h = admin(settings)
    path = f"/api/v1/repos/{org}/widgets/events"
    cases = [
        ({"event": "nope", "payload": {}}, "event"),
        ({"event": "pull_request.nope", "payload": {}}, "event"),
        ({"event": "pull_request", "payload": {}}, "action"),
        ({"event": "pull_request", "action": "flew", "payload": {}}, "action"),
        ({"event": "push", "action": "opened", "payload": {}}, "action"),
        ({"payload": {}}, "event"),
        ({"event": "push"}, "payload"),
        ({"event": "ping", "payload": {}}, "event"),
        ({"event": "push", "payload": [1]}, "payload"),
        ({"event": "push", "payload": {}, "id": 5}, "id"),
        ({"event": "push", "payload": {}, "id": "x" * 201}, "id"),
        ({"event": "push", "payload": {}, "extra": True}, "extra"),
        ([], "body"),
    ]
    await assert_each_refused_naming(api, path, h, cases)
    await error_of(await api.post(path, data=b'{"event":', headers=h), 400)
    await error_of(await api.post(path, json={"event": "push", "payload": {}}), 401)


async def test_body_over_the_limit_is_413(provisioned: Settings, org: str) -> None:
    small = dataclasses.replace(provisioned, max_payload_bytes=2048)
    big = b'{"event":"push","payload":{"x":"' + b"a" * 4096 + b'"}}'
    async with api_client(small) as client:
        h = admin(small)
        path = f"/api/v1/repos/{org}/widgets/events"
        error = await error_of(await client.post(path, data=big, headers=h), 413)
        assert error["code"] == "payload_too_large"

        async def chunked() -> object:  # no Content-Length: the limit holds while reading
            for _ in range(200):
                yield b"a" * 1024

        resp = await client.post(path, data=chunked(), headers=h)
        await error_of(resp, 413)
        # Just under the limit is fine.
        ok = b'{"event":"push","payload":{"x":"' + b"a" * 1500 + b'"}}'
        assert (await client.post(path, data=ok, headers=h)).status == 202


async def test_rate_limit_per_org_is_429_with_retry_after(provisioned: Settings, org: str) -> None:
    limited = dataclasses.replace(provisioned, ingest_rate_per_org=3)
    async with api_client(limited) as client:
        h = admin(limited)
        body = {"event": "push", "payload": {}}
        statuses = [
            (await client.post(f"/api/v1/repos/{org}/r/events", json=body, headers=h)).status
            for _ in range(3)
        ]
        assert statuses == [202, 202, 202]
        resp = await client.post(f"/api/v1/repos/{org}/r/events", json=body, headers=h)
        assert (await error_of(resp, 429))["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        # Another org has its own bucket.
        other = await client.post(f"/api/v1/repos/{org}x/r/events", json=body, headers=h)
        assert other.status == 202


async def test_deep_nesting_and_huge_integers_are_422_not_500(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    repo = new_repo()
    path = f"/api/v1/repos/{org}/{repo}/events"
    for depth in (254, 600, 1023):
        nested = b'{"event":"push","payload":{"x":' + b"[" * depth + b"]" * depth + b"}}"
        err = await error_of(await api.post(path, data=nested, headers=owner), 422)
        assert err["field"] == "body" and "nests deeper" in err["message"]
    huge = b'{"event":"push","payload":{"n":123456789012345678901234567890}}'
    err = await error_of(await api.post(path, data=huge, headers=owner), 422)
    assert "64 bits" in err["message"]
    assert await outbox_rows(pool, EVENTS, f"{org}/{repo}") == []


async def test_a_value_the_database_refuses_fails_only_its_own_request(
    api: TestClient, pool: asyncpg.Pool, org: str, owner: dict[str, str]
) -> None:
    """Concurrent single ingests share transactions (shared.ingest.EventWriter): one event
    the database refuses must not take the others of its transaction down with it."""
    repo = new_repo()
    refused_id = f"{org}-refused-by-the-database"
    # Stands in for a value PostgreSQL refuses (a data exception, SQLSTATE class 22).
    await pool.execute(
        f"""CREATE FUNCTION refuse_{org.replace("-", "_")}() RETURNS trigger LANGUAGE plpgsql
        AS $$ BEGIN IF NEW.id = '{refused_id}' THEN
            RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER refuse_{org.replace("-", "_")} BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION refuse_{org.replace("-", "_")}()"""
    )
    try:
        ids = [f"{org}-ok-{n}" for n in range(30)]
        ids.insert(15, refused_id)
        answers = await asyncio.gather(
            *(
                api.post(
                    f"/api/v1/repos/{org}/{repo}/events",
                    json={"event": "push", "id": event_id, "payload": {"n": n}},
                    headers=owner,
                )
                for n, event_id in enumerate(ids)
            )
        )
        by_id = dict(zip(ids, answers, strict=True))
        assert (await error_of(by_id.pop(refused_id), 422))["field"] == "body"
        assert [a.status for a in by_id.values()] == [202] * 30
        written = {row["id"] for row in await outbox_rows(pool, EVENTS, f"{org}/{repo}")}
        assert written == set(by_id)
    finally:
        await pool.execute(f"DROP TRIGGER refuse_{org.replace('-', '_')} ON events")
        await pool.execute(f"DROP FUNCTION refuse_{org.replace('-', '_')}()")


async def test_the_outbox_holds_each_events_message_byte_for_byte_in_order(
    pool: asyncpg.Pool, org: str
) -> None:
    """write_events sends its events as one JSON document; the outbox must still get
    exactly orjson's encoding of each message (escapes, non-ASCII, NUL, number forms)."""
    repo = new_repo()
    payloads = [
        {"text": 'café ☕ "quoted" \\ back\nline', "nul": "a\x00b", "n": 1.5, "big": 2**63},
        {"emoji": "𝄞", "nested": {"list": [1, 2.0, None, True], "empty": {}}, "e": 1e-7},
        {"plain": "x" * 300},
    ]
    events = [
        make_event(org=org, repo=repo, event="push", payload=p, event_id=f"{org}-exact-{n}")
        for n, p in enumerate(payloads)
    ]
    received = [datetime.now(UTC)] * len(events)
    async with pool.acquire() as conn:
        claimed, seen = await write_events(conn, events, received)
    assert claimed == {(org, e.id) for e in events} and seen == {}
    rows = await pool.fetch(
        "SELECT key, value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id",
        EVENTS,
        f"{org}/{repo}".encode(),
    )
    assert [bytes(r["value"]) for r in rows] == [orjson.dumps(e.to_dict()) for e in events]
    assert {bytes(r["key"]) for r in rows} == {events[0].key}
