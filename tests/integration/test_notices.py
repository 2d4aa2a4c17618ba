"""Webhook notices against real PostgreSQL: each transition writes one outbox event (a
replayed batch, a second disable, a second enable write none), the event's id and payload,
notice mail (a failing one at most hourly), and the postman sending it to a real local
SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from shared.config import Settings
from shared.core.attempts import AttemptRow
from shared.core.notices import notice_event_id
from shared.core.ssrf import Allowlist
from shared.crypto import SecretBox
from shared.kafka import EVENTS
from shared.log.writer import DeliveryLog
from shared.mail import Postman, SmtpServer, message_id
from shared.webhooks import WebhookStore
from tests.smtp import Inbox, free_port, smtp_server


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def store(pool: asyncpg.Pool, settings: Settings) -> WebhookStore:
    return WebhookStore(
        pool, SecretBox(settings.secret_key), allow=Allowlist.parse("127.0.0.0/8"), max_per_repo=20
    )


async def notices(pool: asyncpg.Pool, org: str) -> list[dict[str, Any]]:
    """The org's notice events in the outbox, oldest first."""
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id",
        EVENTS,
        org.encode(),
    )
    return [orjson.loads(r["value"]) for r in rows]


def _failure(webhook_id: str, org: str, n: int, at: datetime, status: int = 500) -> AttemptRow:
    return AttemptRow(
        delivery_id=str(uuid.uuid4()),
        webhook_id=webhook_id,
        org=org,
        event_id=f"ev-{n}",
        event_type="push",
        attempt=1,
        trigger="auto",
        outcome="dead",
        started_at=at,
        response_status=status,
        error="http_status",
        request_body="{}",
    )


def _success(webhook_id: str, org: str, at: datetime) -> AttemptRow:
    return replace(
        _failure(webhook_id, org, 0, at), outcome="succeeded", error=None, response_status=200
    )


async def _write(dlog: DeliveryLog, rows: list[AttemptRow]) -> None:
    await asyncio.wait_for(asyncio.gather(*(dlog.append(r) for r in rows)), 30)


async def test_the_third_failure_emits_one_failing_notice_even_when_the_batch_is_replayed(
    pool: asyncpg.Pool, store: WebhookStore, org: str
) -> None:
    hook, _secret = await store.create(org, "r", {"url": "http://127.0.0.1:9/"})
    dlog = DeliveryLog(pool, flush_interval=0.01, failing_after=3)
    await dlog.start()
    t0 = datetime.now(UTC)
    try:
        rows = [_failure(hook.id, org, n, t0 + timedelta(seconds=n)) for n in range(3)]
        await _write(dlog, rows[:2])
        assert await notices(pool, org) == []
        await _write(dlog, rows[2:])
        (event,) = await notices(pool, org)
        # The same attempts again (a sender killed before its offsets were committed).
        await _write(dlog, rows)
        assert len(await notices(pool, org)) == 1
        # A success ends the streak; the next one is told again, under another id.
        await _write(dlog, [_success(hook.id, org, t0 + timedelta(seconds=30))])
        later = [_failure(hook.id, org, n, t0 + timedelta(minutes=1, seconds=n)) for n in range(3)]
        await _write(dlog, later)
        first, second = await notices(pool, org)
    finally:
        await dlog.close()
    assert event == first
    assert first["type"] == "webhook.failing" and first["repo"] is None
    assert first["id"] == notice_event_id(hook.id, "failing", 1)
    assert second["id"] == notice_event_id(hook.id, "failing", 2)
    assert first["payload"] == {
        "webhook": {
            "id": hook.id,
            "url": "http://127.0.0.1:9/",
            "scope": {"org": org, "repo": "r"},
        },
        "reason": "3 consecutive failed attempts",
        "failure_count": 3,
        "last_error": "http_status 500",
    }
    got = await store.get(hook.id, org)
    assert got.failure_count == 3
    assert got.last_delivery is not None and got.last_delivery.http_status == 500


async def test_disabling_and_enabling_each_emit_once(
    pool: asyncpg.Pool, store: WebhookStore, org: str
) -> None:
    hook, _secret = await store.create(org, None, {"url": "http://127.0.0.1:9/"})
    assert hook.disabled_at is None
    assert await store.disable(hook.id, "endpoint answered 410 Gone") is True
    assert await store.disable(hook.id, "again") is False
    off = await store.get(hook.id, org)
    assert off.active is False and off.disabled_at is not None
    await store.update(hook.id, org, {"active": True})
    await store.update(hook.id, org, {"active": True})  # already on: no transition
    on = await store.get(hook.id, org)
    assert on.active is True and on.disabled_at is None and on.failure_count == 0
    kinds = [(e["type"], e["payload"]["reason"]) for e in await notices(pool, org)]
    assert kinds == [
        ("webhook.disabled", "endpoint answered 410 Gone"),
        ("webhook.enabled", "re-enabled"),
    ]
    ids = [e["id"] for e in await notices(pool, org)]
    assert ids == [
        notice_event_id(hook.id, "disabled", 1),
        notice_event_id(hook.id, "enabled", 2),
    ]


async def test_a_failing_mail_at_most_hourly_and_the_postman_sends_each_once(
    pool: asyncpg.Pool, store: WebhookStore, org: str, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    hook, _secret = await store.create(
        org, "r", {"url": "http://127.0.0.1:9/", "notify_email": "ops@example.com"}
    )
    dlog = DeliveryLog(pool, flush_interval=0.01, failing_after=2)
    await dlog.start()
    t0 = datetime.now(UTC)
    try:
        await _write(dlog, [_failure(hook.id, org, n, t0) for n in range(2)])
        await _write(dlog, [_success(hook.id, org, t0)])
        await _write(dlog, [_failure(hook.id, org, n, t0) for n in range(2)])
    finally:
        await dlog.close()
    await store.disable(hook.id, "disabled after 4 consecutive failed attempts")
    # Two failing notices as events, but only the first one mailed within the hour.
    assert [e["type"] for e in await notices(pool, org)] == [
        "webhook.failing",
        "webhook.failing",
        "webhook.disabled",
    ]
    postman = Postman(pool, SmtpServer.parse(f"smtp://127.0.0.1:{port}"), sender="hl@example.com")
    assert await postman.send_due() >= 2  # (other tests' due mail goes too)
    await postman.send_due()
    mine = [m for m in inbox.messages if hook.id in m.get_payload()]
    assert sorted(m["Subject"].split(":")[0] for m in mine) == [
        "[Hookline] webhook disabled",
        "[Hookline] webhook failing",
    ]
    for message in mine:
        assert message["To"] == "ops@example.com" and message["From"] == "hl@example.com"
    assert {m["Message-ID"] for m in mine} == {
        message_id(notice_event_id(hook.id, "failing", 1)),
        message_id(notice_event_id(hook.id, "disabled", 3)),
    }
    unsent = await pool.fetchval(
        "SELECT count(*) FROM notice_mail WHERE webhook_id = $1 AND sent_at IS NULL",
        uuid.UUID(hook.id),
    )
    assert unsent == 0


async def test_mail_the_server_refuses_stays_and_is_tried_later(
    pool: asyncpg.Pool, store: WebhookStore, org: str
) -> None:
    hook, _secret = await store.create(
        org, None, {"url": "http://127.0.0.1:9/", "notify_email": "ops@example.com"}
    )
    await store.disable(hook.id, "gone")
    nobody = Postman(pool, SmtpServer.parse(f"smtp://127.0.0.1:{free_port()}"), sender="h@e.com")
    assert await nobody.send_due() == 0
    row = await pool.fetchrow(
        "SELECT tries, sent_at, next_try_at > now() AS later, last_error FROM notice_mail"
        " WHERE webhook_id = $1",
        uuid.UUID(hook.id),
    )
    assert row["tries"] == 1 and row["sent_at"] is None and row["later"] and row["last_error"]
    # Not left for another test's postman to send.
    await pool.execute("DELETE FROM notice_mail WHERE webhook_id = $1", uuid.UUID(hook.id))


async def test_re_enabling_beside_a_failing_transition_does_not_deadlock(
    pool: asyncpg.Pool, store: WebhookStore, org: str
) -> None:
    """The log takes the health row, then the webhook row (its notice counter); PATCH
    active:true and delete touch both too, and must take them in the same order."""
    hook, _secret = await store.create(org, None, {"url": "http://127.0.0.1:9/"})
    await store.disable(hook.id, "too many failures")
    wid = uuid.UUID(hook.id)
    await pool.execute(
        "INSERT INTO webhook_health (webhook_id, consecutive_failures, updated_at)"
        " VALUES ($1, 3, now())",
        wid,
    )
    async with pool.acquire() as conn:
        log_side = conn.transaction()
        await log_side.start()
        # As the log's batch: the streak's row first ...
        await conn.execute(
            "UPDATE webhook_health SET consecutive_failures = consecutive_failures + 1"
            " WHERE webhook_id = $1",
            wid,
        )
        enable = asyncio.create_task(store.update(hook.id, org, {"active": True}))
        await asyncio.sleep(0.3)  # the PATCH is now waiting for one of the two rows
        # ... then the webhook's notice counter.
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        await conn.execute("UPDATE webhooks SET notices = notices + 1 WHERE id = $1", wid)
        await log_side.commit()
    enabled = await asyncio.wait_for(enable, 10)
    assert enabled.active is True and enabled.failure_count == 0
