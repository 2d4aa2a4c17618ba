"""README promises about what the real sender does: the disabling rule with its real
span, re-enabling, rotation, form bodies, Retry-After and pings — services as processes,
a real receiver, signatures checked with `standardwebhooks` and GitHub's own recipe."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson
import pytest
from aiohttp import web

from shared.config import Settings
from shared.core.messages import delivery_id_for
from shared.crypto import SecretBox
from shared.webhooks import WebhookStore
from tests.e2e.conftest import Pipeline, start_pipeline
from tests.e2e.harness import (
    Received,
    Receiver,
    answer,
    eventually,
    github_valid,
    pid_holding,
    standard_valid,
)
from tests.e2e.test_pipeline import Api, attempts, ingest, pipeline_quiet


@pytest.fixture(scope="module")
async def pipeline(provisioned: Settings, service_env: dict[str, str]) -> AsyncIterator[Pipeline]:
    # The README's defaults for the disabling rule: ten failures spanning an hour.
    p = await start_pipeline(
        service_env,
        HOOKLINE_DISABLE_AFTER_FAILURES="10",
        HOOKLINE_DISABLE_AFTER_SECONDS="3600",
    )
    yield p
    p.stop()


async def seed_failures(
    pool: asyncpg.Pool, webhook_id: str, failures: int, since: timedelta
) -> None:
    """The webhook's consecutive-failure count as if its earlier failures began `since` ago
    (the count the delivery log keeps and the disabling rule reads)."""
    await pool.execute(
        "INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at,"
        " updated_at) VALUES ($1, $2, now() - $3::interval, now())",
        uuid.UUID(webhook_id),
        failures,
        since,
    )


async def failures_of(pool: asyncpg.Pool, webhook_id: str) -> int | None:
    n = await pool.fetchval(
        "SELECT consecutive_failures FROM webhook_health WHERE webhook_id = $1",
        uuid.UUID(webhook_id),
    )
    return None if n is None else int(n)


async def logged(pool: asyncpg.Pool, delivery_id: str) -> list[asyncpg.Record]:
    return await eventually(lambda: attempts(pool, delivery_id), timeout=60, what="the attempt")


def sequence_with_headers(*answers: tuple[int, dict[str, str]]) -> Any:
    """Answers in order per path, then the last one forever."""

    async def respond(request: Any, n: int) -> web.StreamResponse:
        status, headers = answers[min(n, len(answers) - 1)]
        return web.Response(status=status, headers=headers)

    return respond


NO_RETRIES = {"max_retries": 0, "interval_s": 1}


@pytest.fixture
def api(pipeline: Pipeline) -> Api:
    return Api(pipeline.api_url)


async def failing_hook(api: Api, receiver: Receiver, org: str, path: str) -> dict[str, Any]:
    """A webhook on `path` of the receiver, which answers it 500, without retries."""
    receiver.behaviours[path] = answer(500)
    return await api.webhook(org, "r", receiver.url(path), retry=NO_RETRIES)


async def _tenth_failure(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str, path: str, age: timedelta
) -> tuple[dict[str, Any], list[asyncpg.Record]]:
    """A failing webhook with nine failures `age` old, and its tenth failed attempt (an
    event delivered and logged); the webhook and the log rows of that delivery."""
    hook = await failing_hook(api, receiver, org, path)
    await seed_failures(pool, hook["id"], 9, age)
    event_id = await ingest(api, org, "r", "push", {"ref": path})
    return hook, await logged(pool, delivery_id_for(event_id, hook["id"]))


async def test_the_tenth_failure_disables_when_the_streak_spans_an_hour(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    hook, rows = await _tenth_failure(api, receiver, pool, org, "/old", timedelta(hours=2))
    assert rows[0]["outcome"] == "dead" and rows[0]["error"] == "http_status"

    async def disabled() -> Any:
        _status, body = await api.call("GET", f"/webhooks/{hook['id']}")
        return body if body["active"] is False else None

    body = await eventually(disabled, timeout=30, what="disabled after 10 failures over 2 h")
    assert "10 consecutive failed attempts" in body["disabled_reason"]


async def test_ten_failures_within_the_hour_do_not_disable(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    hook, _ = await _tenth_failure(api, receiver, pool, org, "/young", timedelta(minutes=30))
    assert await eventually(lambda: _at_least(pool, hook["id"], 10), what="10 failures counted")
    await pipeline_quiet(receiver)
    _status, body = await api.call("GET", f"/webhooks/{hook['id']}")
    assert body["active"] is True, f"disabled after 30 minutes: {body['disabled_reason']}"
    assert body["disabled_reason"] is None


async def _at_least(pool: asyncpg.Pool, webhook_id: str, n: int) -> bool:
    return (await failures_of(pool, webhook_id) or 0) >= n


async def test_patch_active_true_re_enables_and_resets_the_failure_count(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    hook = await failing_hook(api, receiver, org, "/back")
    # Disabled with nine failures two hours old: one more would meet the rule again.
    await seed_failures(pool, hook["id"], 9, timedelta(hours=2))
    status, body = await api.call("PATCH", f"/webhooks/{hook['id']}", {"active": False})
    assert status == 200 and body["active"] is False
    status, body = await api.call("PATCH", f"/webhooks/{hook['id']}", {"active": True})
    assert status == 200 and body["active"] is True and body["disabled_reason"] is None
    assert await failures_of(pool, hook["id"]) in (None, 0)

    async def one_sent() -> bool:
        # Pings go to the sender directly; until its table has the change they are skipped.
        _s, answered = await api.call("POST", f"/webhooks/{hook['id']}/ping")
        rows = await logged(pool, answered["delivery_id"])
        return rows[0]["outcome"] != "skipped"

    await eventually(one_sent, timeout=60, what="a ping sent to the re-enabled webhook")
    assert await eventually(lambda: failures_of(pool, hook["id"]), what="the failure counted") == 1
    await pipeline_quiet(receiver)
    _status, body = await api.call("GET", f"/webhooks/{hook['id']}")
    assert body["active"] is True


async def test_old_secret_signs_for_24h_after_rotation_and_stops_after_it_expires(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, settings: Settings, org: str
) -> None:
    hook = await api.webhook(org, "r", receiver.url("/rot"), events=["push"])
    old = hook["secret"]
    status, rotated = await api.call("POST", f"/webhooks/{hook['id']}/rotate-secret")
    assert status == 200
    new = rotated["secret"]
    expires = datetime.fromisoformat(rotated["previous_expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)

    async def delivered_with(secret: str) -> Received | None:
        # The sender learns of a rotation through Kafka: send until it signs with `secret`.
        await ingest(api, org, "r", "push", {"ref": uuid.uuid4().hex})
        await asyncio.sleep(1)
        return next((r for r in receiver.at("/rot") if standard_valid(secret, r)), None)

    r = await eventually(lambda: delivered_with(new), timeout=60, what="signed with the new")
    assert github_valid(new, r) and not github_valid(old, r)
    assert len(r.headers["webhook-signature"].split()) == 2
    assert standard_valid(old, r), "the old secret no longer signs within its 24 h"

    # A second rotation whose grace began 25 h ago: the previous secret has expired.
    store = WebhookStore(
        pool, SecretBox(settings.secret_key), allow=settings.allowed_targets, max_per_repo=100
    )
    third = await store.rotate(hook["id"], None, now=datetime.now(UTC) - timedelta(hours=25))
    r = await eventually(
        lambda: delivered_with(third.secret), timeout=60, what="signed with the third"
    )
    assert len(r.headers["webhook-signature"].split()) == 1
    assert not standard_valid(new, r), "an expired previous secret still signs"
    assert github_valid(third.secret, r)


async def test_form_content_type_is_delivered_as_a_form_and_verifies(
    api: Api, receiver: Receiver, org: str
) -> None:
    hook = await api.webhook(org, "r", receiver.url("/form"), content_type="form")
    event_id = await ingest(api, org, "r", "push", {"ref": "refs/heads/main"})
    got = await eventually(lambda: receiver.at("/form"), timeout=60, what="the form delivery")
    r = got[0]
    assert r.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert github_valid(hook["secret"], r) and standard_valid(hook["secret"], r)
    fields = parse_qs(r.body.decode(), strict_parsing=True)
    assert list(fields) == ["payload"]
    body = orjson.loads(fields["payload"][0])
    assert body["event_id"] == event_id and body["ref"] == "refs/heads/main"


async def test_retry_after_on_503_is_honoured_by_the_sender(
    api: Api, receiver: Receiver, org: str
) -> None:
    receiver.behaviours["/busy"] = sequence_with_headers((503, {"Retry-After": "6"}), (200, {}))
    await api.webhook(org, "r", receiver.url("/busy"), retry={"schedule": [1, 1]})
    await ingest(api, org, "r", "push", {"ref": "x"})
    await eventually(lambda: len(receiver.at("/busy")) >= 2, timeout=60, what="the retry")
    got = receiver.at("/busy")
    assert [r.attempt for r in got[:2]] == [1, 2]
    # A lower bound only: the schedule alone would have retried after about 1 s.
    assert got[1].at - got[0].at >= 5.5


@pytest.mark.parametrize("status", [200, 500])
async def test_a_ping_to_an_active_webhook_is_sent_exactly_once(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str, status: int
) -> None:
    receiver.behaviours["/ping"] = answer(status)
    hook = await api.webhook(org, "r", receiver.url("/ping"), events=["push"])
    code, answered = await api.call("POST", f"/webhooks/{hook['id']}/ping")
    assert code == 202
    got = await eventually(lambda: receiver.at("/ping"), timeout=60, what="the ping")
    rows = await logged(pool, answered["delivery_id"])
    await pipeline_quiet(receiver)
    assert len(receiver.at("/ping")) == 1  # a failed ping is not retried either
    r = got[0]
    assert r.headers["X-Hookline-Event"] == "ping"
    assert r.delivery_id == answered["delivery_id"]
    assert github_valid(hook["secret"], r) and standard_valid(hook["secret"], r)
    rows = await attempts(pool, answered["delivery_id"])
    assert len(rows) == 1 and rows[0]["trigger"] == "ping"
    assert rows[0]["outcome"] == ("succeeded" if status == 200 else "failed")  # single shot


async def test_a_recovered_delivery_is_delivered_end_to_end(
    api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    hook = await failing_hook(api, receiver, org, "/recover")
    since = datetime.now(UTC) - timedelta(minutes=1)
    event_id = await ingest(api, org, "r", "push", {"ref": "again"})
    delivery_id = delivery_id_for(event_id, hook["id"])
    rows = await logged(pool, delivery_id)
    assert rows[0]["outcome"] == "dead"
    receiver.behaviours["/recover"] = answer(200)  # the endpoint is fixed
    status, body = await api.call(
        "POST", f"/webhooks/{hook['id']}/recover", {"since": since.isoformat()}
    )
    assert status == 202 and body == {"count": 1}
    await eventually(lambda: len(receiver.at("/recover")) >= 2, timeout=60, what="the resend")
    got = receiver.at("/recover")
    assert [r.delivery_id for r in got] == [delivery_id, delivery_id]
    assert [r.attempt for r in got] == [1, 2]
    assert got[1].json()["event_id"] == event_id
    assert github_valid(hook["secret"], got[1]) and standard_valid(hook["secret"], got[1])
    rows = await eventually(
        lambda: _rows_when(pool, delivery_id, 2), timeout=30, what="the recovered attempt"
    )
    assert [(r["outcome"], r["trigger"]) for r in rows] == [
        ("dead", "auto"),
        ("succeeded", "recover"),
    ]


async def _rows_when(pool: asyncpg.Pool, delivery_id: str, n: int) -> list[asyncpg.Record]:
    rows = await attempts(pool, delivery_id)
    return rows if len(rows) >= n else []


async def test_a_sender_giving_up_its_partitions_resends_the_hung_request_only(
    pipeline: Pipeline, api: Api, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    """A rebalance (the owner stops): the request hanging past the 3 s hand-off is sent
    again, with the same delivery id, by the next owner; the deliveries done behind it
    are not."""
    release = asyncio.Event()
    hung: list[Received] = []

    async def first_hangs(request: Any, n: int) -> web.StreamResponse:
        if n == 0:
            hung.append(receiver.at("/handoff")[0])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 60)
        return web.Response(status=200)

    receiver.behaviours["/handoff"] = first_hangs
    hook = await api.webhook(org, "r", receiver.url("/handoff"), timeout_s=30)
    first = await ingest(api, org, "r", "push", {"ref": "hangs"})
    await eventually(lambda: hung, timeout=60, what="the first request hanging")
    behind = [await ingest(api, org, "r", "push", {"ref": f"b{i}"}) for i in range(5)]
    for event_id in behind:
        rows = await logged(pool, delivery_id_for(event_id, hook["id"]))
        assert rows[0]["outcome"] == "succeeded"
    senders = {p.proc.pid: p for p in pipeline.running("sender") if p.proc is not None}
    owner = senders[pid_holding(hung[0].peer_port, list(senders)) or 0]
    try:
        assert await asyncio.to_thread(owner.stop, 40) == 0, owner.tail()
        resent = await eventually(
            lambda: [r for r in receiver.at("/handoff")[1:] if r.json()["event_id"] == first],
            timeout=90,
            what="the hung request sent again by the next owner",
        )
    finally:
        release.set()
        if len(pipeline.running("sender")) < 2:
            pipeline.start("sender")
    assert {r.delivery_id for r in resent} == {delivery_id_for(first, hook["id"])}
    await pipeline_quiet(receiver)
    counts = Counter(r.json()["event_id"] for r in receiver.at("/handoff"))
    assert all(counts[e] == 1 for e in behind), counts
