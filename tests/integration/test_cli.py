"""`hookline` against the real stack: the API as a process on PostgreSQL and Kafka, the
CLI through click's runner with an org token made through the API. Log rows are
inserted as the sender's log writer would; dead letters are produced to hookline.dlq."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import TopicPartition

from shared.config import Settings
from shared.core.messages import DeliveryMessage
from shared.kafka import (
    DELIVERIES,
    DLQ,
    EVENTS,
    REJECT_HEADER,
    make_consumer,
    make_producer,
    partitions_of,
)
from tests.integration.api_support import new_repo, outbox_rows
from tests.integration.cli_support import Stack, api_stack
from tests.integration.test_api_deliveries import log_delivery


@pytest.fixture(scope="module")
async def stack(provisioned: Settings, service_env: dict[str, str]) -> AsyncIterator[Stack]:
    async for s in api_stack(service_env):
        yield s


async def new_hook(stack: Stack, token: str, scope: str, **opts: str) -> dict[str, Any]:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    url = "--url=http://127.0.0.1:9/hook"
    hook: dict[str, Any] = await stack.json(token, "hooks", "create", scope, url, *args)
    return hook


async def test_hooks_create_list_show_ping_delete(stack: Stack, org: str) -> None:
    token = await stack.org_token(org)
    repo = f"{org}/{new_repo()}"
    out = await stack.ok(
        token,
        "hooks",
        "create",
        repo,
        "--url",
        "http://127.0.0.1:9/a",
        "-e",
        "push",
        "-e",
        "pull_request.*",
        "--description",
        "from the CLI",
    )
    assert "secret whsec_" in out and "(shown only now)" in out
    listed = await stack.json(token, "hooks", "list", repo)
    [hook] = listed["webhooks"]
    assert hook["events"] == ["push", "pull_request.*"] and "secret" not in hook
    table = await stack.ok(token, "hooks", "list", repo)
    assert hook["id"] in table and "http://127.0.0.1:9/a" in table and "active" in table

    org_hook = await new_hook(stack, token, org)  # ORG alone: an org-level webhook
    assert org_hook["scope"] == {"org": org, "repo": None}
    assert [h["id"] for h in (await stack.json(token, "hooks", "list", org))["webhooks"]] == [
        org_hook["id"]
    ]

    shown = await stack.ok(token, "hooks", "show", hook["id"])
    assert "from the CLI" in shown and "success rate" in shown
    assert "failures in a row" in shown and "none yet" in shown  # health, before any delivery
    assert (await stack.json(token, "hooks", "show", hook["id"]))["url"] == hook["url"]

    ping = await stack.json(token, "hooks", "ping", hook["id"])
    assert uuid.UUID(ping["delivery_id"])
    assert "Ping queued: delivery" in await stack.ok(token, "hooks", "ping", hook["id"])

    kept = await stack.run(token, "hooks", "delete", hook["id"], input="n\n")
    assert kept.exit_code != 0 and "Delete webhook" in kept.output
    assert (await stack.json(token, "hooks", "show", hook["id"]))["id"] == hook["id"]
    assert "Deleted" in await stack.ok(token, "hooks", "delete", hook["id"], "--yes")
    gone = await stack.run(token, "hooks", "show", hook["id"])
    assert gone.exit_code == 1 and "404" in gone.output


async def test_errors_are_one_line_and_non_zero(stack: Stack, org: str) -> None:
    token = await stack.org_token(org)
    repo = f"{org}/{new_repo()}"
    missing = await stack.run(token, "deliveries", "show", str(uuid.uuid4()))
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: 404: ")

    bad_url = await stack.run(token, "hooks", "create", repo, "--url", "ftp://example.com/x")
    assert bad_url.exit_code == 1 and "(field: url)" in bad_url.stderr
    bad_event = await stack.run(token, "events", "send", repo, "no_such_event")
    assert bad_event.exit_code == 1 and "422" in bad_event.stderr
    assert "(field: event)" in bad_event.stderr
    hook = await new_hook(stack, token, repo)
    bad_since = await stack.run(token, "deliveries", "list", hook["id"], "--since", "yesterday")
    assert bad_since.exit_code == 2 and "neither a duration" in bad_since.output

    wrong = await stack.run("hlo_not-a-token", "hooks", "list", repo)
    assert wrong.exit_code == 1 and "401" in wrong.stderr and "HOOKLINE_TOKEN" in wrong.stderr
    unset = await stack.run(None, "hooks", "list", repo)
    assert unset.exit_code == 1 and "HOOKLINE_TOKEN is not set" in unset.stderr

    down = await stack.run(token, "hooks", "list", repo, url="http://127.0.0.1:9")
    assert down.exit_code == 1 and "connection refused" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    not_url = await stack.run(token, "hooks", "list", repo, url="localhost:8080")
    assert not_url.exit_code == 1 and "HOOKLINE_URL" in not_url.stderr

    other = await stack.org_token("other-" + uuid.uuid4().hex[:8])
    hidden = await stack.run(other, "hooks", "show", hook["id"])
    assert hidden.exit_code == 1 and "404" in hidden.stderr


async def test_deliveries_list_show_and_redeliver(
    stack: Stack, pool: asyncpg.Pool, org: str
) -> None:
    token = await stack.org_token(org)
    hook = await new_hook(stack, token, f"{org}/{new_repo()}")
    t0 = datetime.now(UTC) - timedelta(hours=1)
    ids = [
        await log_delivery(
            pool,
            hook,
            status=status,
            at=t0 + timedelta(minutes=i),
            event_type=etype,
            outcomes=outcomes,
        )
        for i, (status, etype, outcomes) in enumerate(
            [
                ("succeeded", "push", ("succeeded",)),
                ("failed", "push", ("failed", "failed")),
                ("succeeded", "pull_request.opened", ("failed", "succeeded")),
                ("dead", "push", ("failed",)),
            ]
        )
    ]
    newest_first = ids[::-1]
    page = await stack.json(token, "deliveries", "list", hook["id"])
    assert [d["id"] for d in page["deliveries"]] == newest_first
    assert page["next_cursor"] is None

    first = await stack.json(token, "deliveries", "list", hook["id"], "--limit", "3")
    assert len(first["deliveries"]) == 3 and first["next_cursor"]
    every = await stack.json(token, "deliveries", "list", hook["id"], "--limit", "1", "--all")
    assert [d["id"] for d in every["deliveries"]] == newest_first
    table = await stack.run(token, "deliveries", "list", hook["id"], "--limit", "2")
    assert newest_first[0] in table.stdout and "More: --cursor" in table.stderr

    async def listed(*filters: str) -> list[str]:
        found = await stack.json(token, "deliveries", "list", hook["id"], *filters)
        return [d["id"] for d in found["deliveries"]]

    assert await listed("--status", "failed") == [ids[1]]
    assert await listed("--event", "pull_request") == [ids[2]]
    assert await listed("--since", (t0 + timedelta(minutes=2)).isoformat()) == newest_first[:2]
    assert await listed("--until", "59m30s") == newest_first[3:]  # only t0's is older

    detail = await stack.json(token, "deliveries", "show", ids[1])
    assert [a["attempt"] for a in detail["attempts"]] == [1, 2]
    shown = await stack.ok(token, "deliveries", "show", ids[1])
    assert "Attempts" in shown and "retry" in shown and "http_status" in shown
    assert "r" * 100 in await stack.ok(token, "deliveries", "show", ids[1], "--bodies")

    again = await stack.json(token, "redeliver", ids[1])
    assert again == {"delivery_id": ids[1], "attempt": 3}
    assert f"Redelivering {ids[1]} as attempt 4." in await stack.ok(token, "redeliver", ids[1])


async def test_recover_counts_and_follows_with_a_progress_bar(
    stack: Stack, pool: asyncpg.Pool, org: str
) -> None:
    token = await stack.org_token(org)
    hook = await new_hook(stack, token, f"{org}/{new_repo()}")
    now = datetime.now(UTC)
    failed = [
        await log_delivery(pool, hook, status=s, at=now - timedelta(minutes=30 + i))
        for i, s in enumerate(["failed", "dead", "failed"])
    ]
    await log_delivery(
        pool, hook, status="succeeded", at=now - timedelta(minutes=10), outcomes=("succeeded",)
    )
    await log_delivery(pool, hook, status="failed", at=now - timedelta(hours=3))  # too old

    assert await stack.json(token, "recover", hook["id"], "--since", "2h", "--no-wait") == {
        "count": 3
    }
    # Pending now, their next attempts reserved. Say those failed again, and recover
    # again: the bar follows them until the sender (here the test, writing the log as it
    # would) settles them.
    await pool.execute(
        "UPDATE deliveries SET status = 'failed' WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in failed],
    )
    run = asyncio.create_task(
        stack.run(token, "recover", hook["id"], "--since", "2h", "--timeout", "60", "--json")
    )

    async def settled_by_test() -> None:
        for _ in range(100):
            pending = await pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE id = ANY($1::uuid[]) AND attempts = 3",
                [uuid.UUID(i) for i in failed],
            )
            if pending == 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        await pool.execute(
            "UPDATE deliveries SET status = 'succeeded' WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in failed],
        )

    await settled_by_test()
    result = await asyncio.wait_for(run, 60)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"count": 3}  # the bar is on stderr
    assert "redelivered" in result.stderr and "3/3" in result.stderr
    shown = await stack.ok(token, "recover", hook["id"], "--since", "2h")
    assert shown.startswith("Recovering 0 deliveries") and "redelivered" not in shown

    bad = await stack.run(token, "recover", hook["id"])
    assert bad.exit_code == 2 and "--since" in bad.output


async def logged(
    pool: asyncpg.Pool, hook: dict[str, Any], http: int, error: str | None, **kw: Any
) -> str:
    """A delivery logged now, with its summary's last status, as one commit (as the
    sender's log writer writes it): tail never sees it half written."""
    async with pool.acquire() as conn, conn.transaction():
        delivery_id = await log_delivery(conn, hook, at=datetime.now(UTC), **kw)
        await conn.execute(
            "UPDATE deliveries SET last_status = $2, last_error = $3 WHERE id = $1",
            uuid.UUID(delivery_id),
            http,
            error,
        )
    return delivery_id


async def test_tail_prints_new_deliveries_as_they_are_logged(
    stack: Stack, pool: asyncpg.Pool, org: str
) -> None:
    token = await stack.org_token(org)
    hook = await new_hook(stack, token, f"{org}/{new_repo()}")
    await log_delivery(pool, hook, status="failed", at=datetime.now(UTC) - timedelta(hours=1))
    run = asyncio.create_task(
        stack.run(token, "tail", hook["id"], "--count", "3", "--timeout", "60", "--interval", "0.3")
    )
    await asyncio.sleep(1.0)
    ok = await logged(
        pool,
        hook,
        200,
        None,
        status="succeeded",
        event_type="pull_request.opened",
        outcomes=("succeeded",),
        duration_ms=42,
    )
    await asyncio.sleep(0.5)
    bad = await logged(pool, hook, 500, "http_status", status="failed", outcomes=("failed",) * 2)
    result = await asyncio.wait_for(run, 60)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Following http://127.0.0.1:9/hook")
    assert len(lines) == 4, lines  # the hour-old delivery is not new; one line per attempt
    assert "pull_request.opened" in lines[1] and "✓ succeeded 200 42 ms attempt 1" in lines[1]
    assert ok in lines[1] and "http_status" not in lines[1]
    for line, expected in zip(lines[2:], ("10 ms attempt 1", "20 ms attempt 2"), strict=True):
        assert "push" in line and f"✗ failed 500 {expected} {bad} http_status" in line, line

    idle = await new_hook(stack, token, f"{org}/{new_repo()}")
    quiet = await stack.run(token, "tail", idle["id"], "--timeout", "0.5")
    assert quiet.exit_code == 0 and len(quiet.stdout.strip().splitlines()) == 1
    unknown = await stack.run(token, "tail", str(uuid.uuid4()), "--timeout", "1")
    assert unknown.exit_code == 1 and "404" in unknown.stderr


async def test_events_send(stack: Stack, pool: asyncpg.Pool, org: str, tmp_path: Path) -> None:
    token = await stack.org_token(org)
    repo = new_repo()
    out = await stack.ok(
        token,
        "events",
        "send",
        f"{org}/{repo}",
        "pull_request",
        "--action",
        "opened",
        "--id",
        "evt-cli-1",
        "--payload",
        '{"number": 7}',
    )
    assert out.strip() == "Event evt-cli-1 accepted."
    again = await stack.ok(
        token,
        "events",
        "send",
        f"{org}/{repo}",
        "pull_request.opened",
        "--id",
        "evt-cli-1",
        "--payload",
        '{"number": 7}',
    )
    assert "already accepted" in again
    file = tmp_path / "payload.json"
    file.write_text(json.dumps({"ref": "refs/heads/main"}))
    sent = await stack.json(
        token, "events", "send", f"{org}/{repo}", "push", "--payload", f"@{file}"
    )
    rows = await outbox_rows(pool, EVENTS, f"{org}/{repo}")
    assert [(r["id"], r["type"], r["payload"]) for r in rows] == [
        ("evt-cli-1", "pull_request.opened", {"number": 7}),
        (sent["event_id"], "push", {"ref": "refs/heads/main"}),
    ]
    piped = await stack.ok(
        token, "events", "send", f"{org}/{repo}", "push", "--payload", "@-", input='{"ref": "x"}'
    )
    assert "accepted" in piped
    not_object = await stack.run(
        token, "events", "send", f"{org}/{repo}", "push", "--payload", "[1]"
    )
    assert not_object.exit_code == 2 and "JSON object" in not_object.output


async def test_inbound_create_list_invocations(stack: Stack, org: str) -> None:
    token = await stack.org_token(org)
    repo = f"{org}/{new_repo()}"
    out = await stack.ok(token, "inbound", "create", repo, "--name", "ci", "--target", "triage")
    assert "/hooks/in/" in out and "secret whsec_" in out
    [made] = (await stack.json(token, "inbound", "list", repo))["inbound_webhooks"]
    assert (made["name"], made["target"], made["verify"]) == ("ci", "triage", "secret_header")
    assert made["id"] in await stack.ok(token, "inbound", "list", repo)

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{stack.url}/api/v1/inbound-webhooks/{made['id']}/test",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
    calls = await stack.json(token, "inbound", "invocations", made["id"])
    [call] = calls["invocations"]
    assert (call["result"], call["test"]) == ("accepted", True)
    assert call["id"] in await stack.ok(token, "inbound", "invocations", made["id"])
    none = await stack.json(token, "inbound", "invocations", made["id"], "--result", "unauthorized")
    assert none["invocations"] == []
    bad = await stack.run(token, "inbound", "create", repo, "--name", "x", "--event", "nope")
    assert bad.exit_code == 1 and "(field: event)" in bad.stderr


async def _dead_letter(settings: Settings, msg: DeliveryMessage, reason: str) -> None:
    producer = make_producer(settings.kafka_bootstrap, client_id="test-cli")
    await producer.start()
    try:
        await producer.send_and_wait(
            DLQ, msg.encode(), key=msg.key, headers=[(REJECT_HEADER, reason.encode())]
        )
    finally:
        await producer.stop()


async def _new_on_deliveries(settings: Settings, ends: dict[TopicPartition, int]) -> list[Any]:
    consumer = make_consumer(settings.kafka_bootstrap, group_id=None, client_id="test-cli")
    await consumer.start()
    try:
        consumer.assign(list(ends))
        for tp, offset in ends.items():
            consumer.seek(tp, offset)
        batches = await consumer.getmany(timeout_ms=2000)
        return [DeliveryMessage.decode(r.value) for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()


async def _deliveries_ends(settings: Settings) -> dict[TopicPartition, int]:
    consumer = make_consumer(settings.kafka_bootstrap, group_id=None, client_id="test-cli")
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await partitions_of(consumer, DELIVERIES)))
    finally:
        await consumer.stop()


async def test_dlq_list_and_replay(
    stack: Stack, pool: asyncpg.Pool, provisioned: Settings, org: str
) -> None:
    token = await stack.org_token(org)
    hook = await new_hook(stack, token, f"{org}/{new_repo()}")
    logged = await log_delivery(
        pool, hook, status="dead", at=datetime.now(UTC), outcomes=("failed",) * 3
    )

    def dead(delivery_id: str, attempt: int) -> DeliveryMessage:
        return DeliveryMessage(
            delivery_id=delivery_id,
            webhook_id=hook["id"],
            org=org,
            event_id="evt-dlq",
            event_type="push",
            body={"event": "push", "n": 1},
            attempt=attempt,
            trigger="retry",
            last_error="http_status",
        )

    unlogged = str(uuid.uuid4())
    await _dead_letter(provisioned, dead(logged, 3), "retries exhausted")
    await _dead_letter(provisioned, dead(unlogged, 6), "retries exhausted")

    listed = await stack.json(stack.admin_token, "dlq", "list", "--webhook", hook["id"])
    assert [(d["delivery_id"], d["attempt"], d["reason"]) for d in listed["dead_letters"]] == [
        (unlogged, 6, "retries exhausted"),
        (logged, 3, "retries exhausted"),
    ]
    table = await stack.ok(stack.admin_token, "dlq", "list", "--org", org)
    assert logged in table and unlogged in table and "retries exhausted" in table

    no = await stack.run(stack.admin_token, "dlq", "replay", logged, input="n\n")
    assert no.exit_code == 1 and "Replay delivery" in no.output
    assert (
        await pool.fetchval("SELECT attempts FROM deliveries WHERE id = $1", uuid.UUID(logged)) == 3
    )

    # In the log: through the API, which reserves the next attempt number.
    out = await stack.ok(stack.admin_token, "dlq", "replay", logged, input="y\n")
    assert f"Replayed {logged} as attempt 4 (API)." in out

    # Not in the log: the dead message itself, again, to hookline.deliveries.
    ends = await _deliveries_ends(provisioned)
    out = await stack.ok(stack.admin_token, "dlq", "replay", unlogged, "--yes")
    assert f"Replayed {unlogged} to {DELIVERIES} (Kafka)." in out
    [again] = [m for m in await _new_on_deliveries(provisioned, ends) if m.delivery_id == unlogged]
    assert (again.trigger, again.single, again.attempt, again.numbered) == (
        "manual",
        True,
        7,
        False,
    )
    assert again.body == {"event": "push", "n": 1} and again.webhook_id == hook["id"]

    missing = await stack.run(stack.admin_token, "dlq", "replay", str(uuid.uuid4()), "--yes")
    assert missing.exit_code == 1 and "no dead letter" in missing.stderr
    down = await stack.run(stack.admin_token, "dlq", "list", kafka="127.0.0.1:9")
    assert down.exit_code == 1 and "cannot read hookline.dlq from Kafka" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
