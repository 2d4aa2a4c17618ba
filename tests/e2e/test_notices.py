"""Webhook health and notifications through the real pipeline (DESIGN.md section 11): a
failing webhook's `webhook.failing` and `webhook.disabled` reach an org hook once each and
mail reaches a local SMTP server (aiosmtpd), with the sender kill -9'ed in the middle of
the failing transition; PATCH active:true with recover_since emits `webhook.enabled` and
sends again what failed or was skipped; the health fields move along."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.config import Settings
from shared.core.messages import delivery_id_for
from shared.kafka import DELIVERIES, EVENTS, SENDER_GROUP
from tests.e2e.conftest import Pipeline, start_pipeline
from tests.e2e.harness import Receiver, answer, eventually
from tests.e2e.test_pipeline import Api, attempts, ingest, pipeline_quiet
from tests.integration.kafka_support import GroupProgress
from tests.smtp import Inbox, smtp_server

NO_RETRIES = {"max_retries": 0, "interval_s": 1}


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
async def pipeline(
    provisioned: Settings, service_env: dict[str, str], smtp: tuple[Inbox, int]
) -> AsyncIterator[Pipeline]:
    p = await start_pipeline(
        service_env,
        HOOKLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp[1]}",
        HOOKLINE_FAILING_AFTER_FAILURES="3",
        HOOKLINE_DISABLE_AFTER_FAILURES="5",
        HOOKLINE_DISABLE_AFTER_SECONDS="0",
    )
    yield p
    p.stop()


def notices_at(receiver: Receiver, path: str, about: str) -> dict[str, set[str]]:
    """The distinct event ids of each notice type a path received about a webhook."""
    out: dict[str, set[str]] = {}
    for r in receiver.at(path):
        body = r.json()
        if str(body.get("type", "")).startswith("webhook.") and body["webhook"]["id"] == about:
            out.setdefault(body["type"], set()).add(body["event_id"])
    return out


async def outbox_notices(pool: asyncpg.Pool, org: str, kind: str) -> int:
    n = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE topic = $1 AND key = $2"
        " AND convert_from(value, 'UTF8')::jsonb ->> 'type' = $3",
        EVENTS,
        org.encode(),
        f"webhook.{kind}",
    )
    return int(n)


async def _blocked_on_the_notice(pool: asyncpg.Pool) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%notices = notices + 1%'"
    )
    return bool(n)


async def test_failing_then_disabled_told_once_each_across_a_kill_9_then_re_enabled(
    pipeline: Pipeline,
    receiver: Receiver,
    pool: asyncpg.Pool,
    org: str,
    smtp: tuple[Inbox, int],
) -> None:
    inbox, _port = smtp
    api = Api(pipeline.api_url)
    watcher = await api.webhook(org, None, receiver.url("/watch"), events=["webhook.*"])
    # An org-level webhook that takes every event: it must never get a notice about itself.
    receiver.behaviours["/bad"] = answer(500)
    bad = await api.webhook(
        org, None, receiver.url("/bad"), retry=NO_RETRIES, notify_email="ops@example.com"
    )
    wid = bad["id"]
    assert (bad["failure_count"], bad["last_delivery"], bad["disabled_at"]) == (0, None, None)
    since = datetime.now(UTC) - timedelta(seconds=5)
    events = [await ingest(api, org, "r", "push", {"ref": f"r{n}"}) for n in range(2)]

    async def failures() -> int:
        _s, body = await api.call("GET", f"/webhooks/{wid}")
        return int(body["failure_count"])

    await eventually(lambda: _at_least(failures, 2), timeout=60, what="two failures counted")
    # Their offsets committed first: else the kill below replays them too (at-least-once),
    # and the replays count as the third and fourth consecutive failures.
    progress = await GroupProgress(
        pipeline.env["HOOKLINE_KAFKA_BOOTSTRAP"], SENDER_GROUP, DELIVERIES, wid.encode()
    ).mark()
    await eventually(progress.committed, timeout=30, what="the two failures' offsets committed")
    _s, body = await api.call("GET", f"/webhooks/{wid}")
    last = body["last_delivery"]
    assert last["status"] == "dead" and last["http_status"] == 500 and last["at"]

    # The third failure's transaction (count, failing flag, notice) is held on the webhook's
    # row, then its sender is killed: it commits nothing, and its replay tells it once.
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE", uuid.UUID(wid))
        events.append(await ingest(api, org, "r", "push", {"ref": "r2"}))
        await eventually(lambda: _blocked_on_the_notice(pool), timeout=60, what="the notice held")
        for sender in pipeline.running("sender"):
            sender.kill9()
        await tx.rollback()
    assert await outbox_notices(pool, org, "failing") == 0
    for _ in range(2):
        pipeline.start("sender")

    await eventually(
        lambda: notices_at(receiver, "/watch", wid).get("webhook.failing"),
        timeout=120,
        what="webhook.failing at the org hook",
    )
    await eventually(lambda: inbox.about(wid)["failing"], timeout=60, what="the failing mail")

    events += [await ingest(api, org, "r", "push", {"ref": f"r{n}"}) for n in (3, 4)]

    async def disabled() -> Any:
        _s, body = await api.call("GET", f"/webhooks/{wid}")
        return body if body["active"] is False else None

    body = await eventually(disabled, timeout=90, what="disabled at five failures")
    assert body["failure_count"] >= 5 and body["disabled_at"] is not None
    assert "consecutive failed attempts" in body["disabled_reason"]
    await eventually(
        lambda: notices_at(receiver, "/watch", wid).get("webhook.disabled"),
        timeout=60,
        what="webhook.disabled at the org hook",
    )
    await eventually(lambda: inbox.about(wid)["disabled"], timeout=60, what="the disabled mail")

    # The endpoint is fixed and the webhook re-enabled, with what failed sent again.
    receiver.behaviours["/bad"] = answer(200)
    status, body = await api.call(
        "PATCH", f"/webhooks/{wid}", {"active": True, "recover_since": since.isoformat()}
    )
    assert status == 202, body
    assert body["recovered"] == 5 and body["active"] is True
    assert body["failure_count"] == 0 and body["disabled_at"] is None
    assert body["disabled_reason"] is None

    wanted = [delivery_id_for(e, wid) for e in events]

    async def resent() -> bool:
        for delivery_id in wanted:
            rows = await attempts(pool, delivery_id)
            if not any((r["trigger"], r["outcome"]) == ("recover", "succeeded") for r in rows):
                return False
        return True

    await eventually(resent, timeout=90, what="the five deliveries sent again and logged")
    await eventually(
        lambda: notices_at(receiver, "/watch", wid).get("webhook.enabled"),
        timeout=60,
        what="webhook.enabled at the org hook",
    )
    await eventually(lambda: inbox.about(wid)["enabled"], timeout=60, what="the enabled mail")

    async def healthy() -> Any:
        _s, body = await api.call("GET", f"/webhooks/{wid}")
        last = body["last_delivery"]
        return body if last and last["status"] == "succeeded" else None

    body = await eventually(healthy, timeout=60, what="the newest delivery succeeded")
    assert body["last_delivery"]["http_status"] == 200 and body["failure_count"] == 0

    await pipeline_quiet(receiver)
    # Once each, whatever the crash replayed: the outbox, the org hook, the mail.
    for kind in ("failing", "disabled", "enabled"):
        assert await outbox_notices(pool, org, kind) == 1, kind
        assert len(notices_at(receiver, "/watch", wid)[f"webhook.{kind}"]) == 1, kind
    assert inbox.about(wid) == Counter({"failing": 1, "disabled": 1, "enabled": 1})
    # Never to the webhook a notice is about, though it takes every event.
    assert not [r for r in receiver.at("/bad") if r.json().get("type", "").startswith("webhook.")]
    assert notices_at(receiver, "/watch", watcher["id"]) == {}
    payload = next(
        r.json() for r in receiver.at("/watch") if r.json().get("type") == "webhook.failing"
    )
    assert payload["webhook"] == {"id": wid, "url": bad["url"], "scope": {"org": org, "repo": None}}
    assert payload["failure_count"] >= 3 and payload["last_error"] == "http_status 500"
    assert payload["reason"] == f"{payload['failure_count']} consecutive failed attempts"


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)
