"""Issue: the delivery pipeline, end to end — services as processes, a real receiver."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from shared.config import Settings
from shared.core.messages import DeliveryMessage, delivery_id_for
from shared.kafka import DLQ, EVENTS, make_producer, partitions_of
from shared.outbox import enqueue_event
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Pipeline
from tests.e2e.harness import Received, Receiver, answer, eventually, hang, pid_holding, sequence


class Api:
    def __init__(self, base: str, token: str = TEST_ADMIN_TOKEN) -> None:
        self.base = base + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers=self.headers) as s,
            s.request(method, self.base + path, json=body) as r,
        ):
            text = await r.read()
            return r.status, (orjson.loads(text) if text else None)

    async def webhook(self, org: str, repo: str | None, url: str, **fields: Any) -> dict[str, Any]:
        path = f"/repos/{org}/{repo}/webhooks" if repo else f"/orgs/{org}/webhooks"
        status, body = await self.call("POST", path, {"url": url, "events": ["*"], **fields})
        assert status == 201, body
        return body  # type: ignore[no-any-return]


async def attempts(pool: asyncpg.Pool, delivery_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT attempt, outcome, error, trigger, response_status FROM delivery_attempts"
        " WHERE delivery_id = $1 ORDER BY attempt, started_at",
        uuid.UUID(delivery_id),
    )


async def ingest(
    api: Api, org: str, repo: str, event: str, payload: dict[str, Any], event_id: str | None = None
) -> str:
    body: dict[str, Any] = {"event": event, "payload": payload}
    if event_id:
        body["id"] = event_id
    status, answer_ = await api.call("POST", f"/repos/{org}/{repo}/events", body)
    assert status in (200, 202), answer_
    return answer_["event_id"]  # type: ignore[no-any-return]


async def test_push_reaches_subscribed_hook_with_both_signatures(
    pipeline: Pipeline, receiver: Receiver, org: str
) -> None:
    api = Api(pipeline.api_url)
    hook = await api.webhook(org, "widgets", receiver.url("/push"), events=["push"])
    event_id = await ingest(api, org, "widgets", "push", {"ref": "refs/heads/main"})
    got = await eventually(lambda: receiver.at("/push"), what="the push delivery")
    r = got[0]
    assert r.headers["X-Hookline-Event"] == "push"
    assert r.delivery_id == delivery_id_for(event_id, hook["id"])
    assert r.attempt == 1
    assert r.signatures_valid(hook["secret"])
    assert not r.signatures_valid("whsec_" + "A" * 43 + "=")
    body = r.json()
    assert body["event"] == "push" and body["event_id"] == event_id
    assert body["repository"]["full_name"] == f"{org}/widgets" and body["ref"] == "refs/heads/main"


async def test_failing_twice_then_succeeding_gives_three_attempts_one_id(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    api = Api(pipeline.api_url)
    receiver.behaviours["/flaky"] = sequence(500, 503, 200)
    hook = await api.webhook(org, "r", receiver.url("/flaky"), retry={"schedule": [1, 1]})
    event_id = await ingest(api, org, "r", "issue.opened", {"issue": {"number": 7}})
    await eventually(lambda: len(receiver.at("/flaky")) >= 3, timeout=40, what="3 attempts")
    got = receiver.at("/flaky")
    assert {r.delivery_id for r in got} == {delivery_id_for(event_id, hook["id"])}
    assert [r.attempt for r in got] == [1, 2, 3]
    assert got[1].at - got[0].at >= 0.9  # the retry waited its delay, never earlier
    rows = await eventually(
        lambda: _attempts_when(pool, got[0].delivery_id, 3), what="3 attempts in the log"
    )
    assert [r["outcome"] for r in rows] == ["failed", "failed", "succeeded"]
    assert [r["trigger"] for r in rows] == ["auto", "retry", "retry"]
    assert [r["response_status"] for r in rows] == [500, 503, 200]


async def _attempts_when(pool: asyncpg.Pool, delivery_id: str, n: int) -> list[asyncpg.Record]:
    rows = await attempts(pool, delivery_id)
    return rows if len(rows) >= n else []


async def test_always_failing_ends_dead_in_dlq_and_disabled(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, settings: Settings, org: str
) -> None:
    api = Api(pipeline.api_url)
    receiver.behaviours["/down"] = answer(500)
    hook = await api.webhook(org, "r", receiver.url("/down"), retry={"schedule": [1, 1]})
    dlq = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await dlq.start()
    try:
        parts = await partitions_of(dlq, DLQ)
        ends = await dlq.end_offsets(parts)
        dlq.assign(parts)
        for tp in parts:
            dlq.seek(tp, ends[tp])
        event_id = await ingest(api, org, "r", "push", {"ref": "x"})
        delivery_id = delivery_id_for(event_id, hook["id"])
        rows = await eventually(
            lambda: _attempts_when(pool, delivery_id, 3), timeout=40, what="3 attempts"
        )
        assert [r["outcome"] for r in rows] == ["failed", "failed", "dead"]
        assert all(r["error"] == "http_status" for r in rows)

        async def dead_letter() -> bool:
            batch = await dlq.getmany(timeout_ms=500)
            return any(
                DeliveryMessage.decode(m.value).delivery_id == delivery_id
                for msgs in batch.values()
                for m in msgs
            )

        await eventually(dead_letter, timeout=20, what="the delivery in hookline.dlq")
    finally:
        await dlq.stop()

    async def disabled() -> Any:
        status, body = await api.call("GET", f"/webhooks/{hook['id']}")
        return body if status == 200 and body["active"] is False else None

    body = await eventually(disabled, timeout=20, what="the webhook disabled")
    assert body["disabled_reason"]
    status, delivery = await api.call("GET", f"/deliveries/{delivery_id}")
    assert status == 200 and delivery["status"] == "dead"


async def test_410_disables_at_once_and_later_deliveries_are_skipped(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    api = Api(pipeline.api_url)
    receiver.behaviours["/gone"] = answer(410)
    hook = await api.webhook(org, "r", receiver.url("/gone"))
    await ingest(api, org, "r", "push", {"ref": "a"})

    async def disabled() -> Any:
        _status, body = await api.call("GET", f"/webhooks/{hook['id']}")
        return body if body["active"] is False else None

    body = await eventually(disabled, timeout=20, what="disabled after a 410")
    assert "410" in body["disabled_reason"]
    assert len(receiver.at("/gone")) == 1
    # The matcher no longer routes to it, or the sender logs it skipped: never sent again.
    second = await ingest(api, org, "r", "push", {"ref": "b"})
    status, answered = await api.call("POST", f"/webhooks/{hook['id']}/ping")
    assert status == 202, answered
    # A ping goes to the sender whatever the matcher knows: its attempt is logged, skipped.
    ping_rows = await eventually(
        lambda: attempts(pool, answered["delivery_id"]), what="the ping's attempt in the log"
    )
    assert [r["outcome"] for r in ping_rows] == ["skipped"], ping_rows
    await pipeline_quiet(receiver)
    assert len(receiver.at("/gone")) == 1
    # The event either never matched (no row) or was skipped; never sent.
    rows = await attempts(pool, delivery_id_for(second, hook["id"]))
    assert all(r["outcome"] == "skipped" for r in rows), rows


async def pipeline_quiet(receiver: Receiver, seconds: float = 3.0) -> None:
    import asyncio

    await asyncio.sleep(seconds)  # give a wrongly-sent request time to arrive


async def test_timeout_is_classed_timeout(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    api = Api(pipeline.api_url)
    receiver.behaviours["/slow"] = hang(5)
    hook = await api.webhook(
        org, "r", receiver.url("/slow"), timeout_s=1, retry={"max_retries": 0, "interval_s": 1}
    )
    event_id = await ingest(api, org, "r", "push", {"ref": "x"})
    rows = await eventually(
        lambda: _attempts_when(pool, delivery_id_for(event_id, hook["id"]), 1),
        timeout=20,
        what="the timed-out attempt",
    )
    assert rows[0]["error"] == "timeout" and rows[0]["outcome"] == "dead"


async def test_same_event_published_twice_gives_one_delivery_id(
    pipeline: Pipeline, receiver: Receiver, settings: Settings, org: str
) -> None:
    api = Api(pipeline.api_url)
    hook = await api.webhook(org, "r", receiver.url("/twice"))
    event_id = "evt-" + uuid.uuid4().hex
    raw = orjson.dumps(
        {"id": event_id, "event": "star.added", "org": org, "repo": "r", "payload": {}}
    )
    producer = make_producer(settings.kafka_bootstrap, client_id="e2e-direct")
    await producer.start()
    try:
        await producer.send_and_wait(EVENTS, raw, key=f"{org}/r".encode())
        await producer.send_and_wait(EVENTS, raw, key=f"{org}/r".encode())
    finally:
        await producer.stop()
    # Both copies are matched; the second may be sent again or not (at least once), but
    # whatever arrives carries the one delivery id the event and webhook determine.
    await eventually(lambda: receiver.at("/twice"), timeout=30, what="a copy")
    await asyncio.sleep(3)
    assert {r.delivery_id for r in receiver.at("/twice")} == {delivery_id_for(event_id, hook["id"])}


async def test_kill_9_of_a_sender_mid_stream_loses_nothing(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, org: str
) -> None:
    """The sender that owns the webhook's partition is killed while requests it sent hang
    at the receiver: every event still arrives, the hung ones again, under the same id."""
    import asyncio

    from aiohttp import web

    api = Api(pipeline.api_url)
    gate = asyncio.Event()
    hanging: list[Received] = []

    async def slow_then_hang(request: Any, n: int) -> Any:
        if n >= 40 and not gate.is_set():
            hanging.append(receiver.at("/bulk")[n])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wait(), 60)
        await asyncio.sleep(0.02)
        return web.Response(status=200)

    receiver.behaviours["/bulk"] = slow_then_hang
    hook = await api.webhook(org, "bulk", receiver.url("/bulk"), timeout_s=30)
    event_ids = [f"bulk-{i}-{uuid.uuid4().hex[:6]}" for i in range(300)]
    async with pool.acquire() as conn, conn.transaction():
        for eid in event_ids:
            await enqueue_event(
                conn, org=org, repo="bulk", event="push", payload={"ref": eid}, event_id=eid
            )
    # Requests in flight: sent by the owner of the webhook's partition, not answered.
    await eventually(lambda: len(hanging) >= 3, timeout=60, what="requests hanging")
    senders = {p.proc.pid: p for p in pipeline.running("sender") if p.proc is not None}
    holders = [pid_holding(r.peer_port, list(senders)) for r in hanging]
    assert None not in holders, (holders, list(senders))
    # The group may still have been settling (the test can run first in its module): a
    # rebalance then hands the partition over once, and the first owner's hung requests
    # are already resent by the next. The owner now sent the newest hung request.
    owner = holders[-1]
    victim = senders[owner]  # type: ignore[index]
    in_flight = {r.delivery_id for r, pid in zip(hanging, holders, strict=True) if pid == owner}
    victim.kill9()
    gate.set()
    pipeline.start("sender")

    def delivered() -> set[str]:
        return {r.json()["event_id"] for r in receiver.at("/bulk")}

    def resent() -> bool:
        counts = Counter(r.delivery_id for r in receiver.at("/bulk"))
        return delivered() >= set(event_ids) and all(counts[d] >= 2 for d in in_flight)

    await eventually(
        resent, timeout=180, what="all 300 events delivered, the hung ones again, after kill -9"
    )
    expected = {e: delivery_id_for(e, hook["id"]) for e in event_ids}
    for r in receiver.at("/bulk"):
        assert r.delivery_id == expected[r.json()["event_id"]], "a repeat with a new id"
    duplicates = receiver.duplicates("/bulk")
    assert in_flight <= set(duplicates)
    assert set(duplicates) <= set(expected.values())
    wanted = [uuid.UUID(d) for d in expected.values()]

    async def logged() -> bool:
        n = await pool.fetchval(
            "SELECT count(DISTINCT delivery_id) FROM delivery_attempts"
            " WHERE delivery_id = ANY($1) AND outcome = 'succeeded'",
            wanted,
        )
        return bool(n == len(wanted))

    await eventually(logged, timeout=30, what="every delivery in the log")
