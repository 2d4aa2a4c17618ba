"""The sender in-process against real Kafka and PostgreSQL and a real HTTP receiver.

Each run uses its own topics and consumer groups, so it never sees another run's messages.
The module's sender, receiver and topics are the fixtures of conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from standardwebhooks.webhooks import Webhook as StandardWebhook

from services.sender import deliver as deliver_module
from services.sender.effects import Disabler
from services.sender.http import WebhookClient
from services.sender.retry_tiers import REJECT_HEADER, Topics
from shared.config import Settings
from shared.core.attempts import AttemptRow
from shared.core.errors import RowRejected, Unavailable
from shared.core.messages import DeliveryMessage
from shared.core.retry import RETRY_TIERS
from shared.core.signing import verify_github
from shared.core.ssrf import Allowlist
from shared.crypto import SecretBox
from shared.kafka import make_consumer, make_producer
from shared.log.writer import DeliveryLog
from shared.webhooks import WebhookStore
from tests.integration.sender_support import (
    Harness,
    ProduceRaw,
    Receiver,
    Sender,
    dead_letters,
    hook,
    new_delivery,
    one_partition_topics,
    received,
    start_sender,
)


async def test_success_is_signed_both_ways_and_logged(harness: Harness, org: str) -> None:
    path = f"/ok/{org}"
    wid, secret = await harness.hook(org, path)
    msg = await harness.produce(wid, org, "pull_request.opened")
    rows = await harness.attempts(msg.delivery_id, 1)
    assert [r["outcome"] for r in rows] == ["succeeded"]
    [(headers, body)] = harness.requests(path)
    assert headers["X-Hookline-Event"] == "pull_request.opened"
    assert headers["X-Hookline-Delivery"] == msg.delivery_id
    assert headers["X-Hookline-Attempt"] == "1"
    assert headers["User-Agent"].startswith("Hookline/")
    assert headers["Content-Type"] == "application/json"
    assert verify_github(secret, body, headers["X-Hub-Signature-256"])
    assert headers["X-Hookline-Signature-256"] == headers["X-Hub-Signature-256"]
    StandardWebhook(secret).verify(body, headers)  # raises if invalid
    row = rows[0]
    assert row["response_status"] == 200 and row["response_body"] == "thanks"
    assert row["request_body"] == body.decode()
    assert row["request_headers"]["webhook-signature"] == headers["webhook-signature"]
    assert secret not in str(row["request_headers"])
    assert row["resolved_ip"] == "127.0.0.1" and row["error"] is None
    summary = await harness.summary(msg.delivery_id)
    assert summary["status"] == "succeeded" and summary["attempts"] == 1


async def test_fails_twice_then_succeeds_with_the_same_delivery_id(
    harness: Harness, org: str
) -> None:
    path = f"/flaky/{org}"
    harness.receiver.fail_first[path] = 2
    wid, _ = await harness.hook(org, path, retry={"schedule": [1, 1]})
    msg = await harness.produce(wid, org)
    rows = await harness.attempts(msg.delivery_id, 3)
    assert [(r["attempt"], r["outcome"], r["trigger"]) for r in rows] == [
        (1, "failed", "auto"),
        (2, "failed", "retry"),
        (3, "succeeded", "retry"),
    ]
    sent = harness.requests(path)
    assert [h["X-Hookline-Attempt"] for h, _ in sent] == ["1", "2", "3"]
    assert {h["X-Hookline-Delivery"] for h, _ in sent} == {msg.delivery_id}
    for earlier, later in itertools.pairwise(rows):
        assert earlier["next_attempt_at"] is not None
        assert later["started_at"] >= earlier["next_attempt_at"]  # never early
    summary = await harness.summary(msg.delivery_id)
    assert summary["status"] == "succeeded" and summary["attempts"] == 3


async def test_always_failing_goes_dead_to_the_dlq_and_disables(harness: Harness, org: str) -> None:
    path = f"/fail/{org}"
    wid, _ = await harness.hook(org, path, retry={"schedule": [1, 1]})
    msg = await harness.produce(wid, org)
    rows = await harness.attempts(msg.delivery_id, 3)
    assert [r["outcome"] for r in rows] == ["failed", "failed", "dead"]
    assert all(r["error"] == "http_status" and r["response_status"] == 500 for r in rows)
    assert all(len(r["response_body"]) == 16384 for r in rows)  # cut at 16 KiB
    assert (await harness.summary(msg.delivery_id))["status"] == "dead"
    # Copied to the dead-letter topic with the last error.
    dead = await harness.dead_letters(msg.delivery_id)
    assert len(dead) == 1
    found = DeliveryMessage.decode(dead[0][0])
    assert found.attempt == 3
    assert found.last_error == "http_status 500"
    # Three consecutive failures with a 0 s span: disabled.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = await harness.pool.fetchrow(
            "SELECT active, disabled_reason FROM webhooks WHERE id = $1", uuid.UUID(wid)
        )
        if not row["active"]:
            break
        await asyncio.sleep(0.05)
    assert row["active"] is False
    assert "3 consecutive failed attempts" in row["disabled_reason"]
    # What follows is skipped, not sent.
    before = len(harness.requests(path))
    nxt = await harness.produce(wid, org)
    [skipped] = await harness.attempts(nxt.delivery_id, 1)
    assert skipped["outcome"] == "skipped" and skipped["error"] is None
    assert len(harness.requests(path)) == before


async def test_410_disables_at_once(harness: Harness, org: str) -> None:
    wid, _ = await harness.hook(org, f"/gone/{org}")
    msg = await harness.produce(wid, org)
    [row] = await harness.attempts(msg.delivery_id, 1)
    assert (row["outcome"], row["response_status"]) == ("dead", 410)
    webhook = await harness.pool.fetchrow(
        "SELECT active, disabled_reason FROM webhooks WHERE id = $1", uuid.UUID(wid)
    )
    assert webhook["active"] is False and "410" in webhook["disabled_reason"]


async def test_timeout_is_classed_timeout(harness: Harness, org: str) -> None:
    wid, _ = await harness.hook(
        org, f"/slow/{org}", timeout_s=1, retry={"max_retries": 0, "interval_s": 1}
    )
    msg = await harness.produce(wid, org)
    [row] = await harness.attempts(msg.delivery_id, 1)
    assert (row["outcome"], row["error"], row["response_status"]) == ("dead", "timeout", None)
    # How close to timeout_s it took is timing: tests/bench/http_client.py reports it.


async def test_disabled_and_deleted_webhooks_are_skipped(harness: Harness, org: str) -> None:
    path = f"/ok/{org}/off"
    off, _ = await harness.hook(org, path, active=False)
    gone, _ = await harness.hook(org, path)
    await harness.store.delete(gone, org)
    a = await harness.produce(off, org)
    b = await harness.produce(gone, org)
    [ra] = await harness.attempts(a.delivery_id, 1)
    [rb] = await harness.attempts(b.delivery_id, 1)
    assert (ra["outcome"], ra["error"]) == ("skipped", None)
    assert (rb["outcome"], rb["error"]) == ("skipped", None)  # null: no error class
    # The body that would have been sent is kept, so a later redelivery can send it.
    assert orjson.loads(ra["request_body"]) == a.body
    assert orjson.loads(rb["request_body"]) == b.body
    assert (await harness.summary(a.delivery_id))["status"] == "skipped"
    assert harness.requests(path) == []


async def test_retry_after_is_honoured(harness: Harness, org: str) -> None:
    wid, _ = await harness.hook(org, f"/busy/{org}", retry={"schedule": [1]})
    msg = await harness.produce(wid, org)
    first, second = await harness.attempts(msg.delivery_id, 2)
    assert (first["outcome"], first["response_status"]) == ("failed", 429)
    assert second["outcome"] == "succeeded"
    # Retry-After 2 s beat the 1 s schedule; the retry was not early.
    end_of_first = first["started_at"].timestamp() + first["duration_ms"] / 1000
    assert first["next_attempt_at"].timestamp() - end_of_first >= 1.95
    assert second["started_at"] >= first["next_attempt_at"]


async def test_loopback_without_allowlist_is_blocked(
    receiver: Receiver, sender_settings: Settings
) -> None:
    strict = dataclasses.replace(sender_settings, allowed_targets=Allowlist.parse(""))
    client = WebhookClient(strict.allowed_targets, concurrency=4, max_request_bytes=1 << 20)
    await client.start()
    try:
        path = f"/ok/blocked-{uuid.uuid4().hex[:6]}"
        for url in (receiver.base + path, receiver.base.replace("127.0.0.1", "localhost") + path):
            result = await client.post(url, b"{}", {}, timeout_s=5)
            assert (result.error, result.status) == ("blocked", None)
        big = await client.post(receiver.base + path, b"x" * (2 << 20), {}, timeout_s=5)
        assert big.error == "too_large"
    finally:
        await client.close()
    assert receiver.requests(path) == []


async def test_a_bug_after_the_post_dead_letters_instead_of_reposting_forever(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, org: str
) -> None:
    real = deliver_module.decide

    def broken(result: Any, **kw: Any) -> Any:
        if result.status == 418:
            raise ValueError("attempt out of range")
        return real(result, **kw)

    monkeypatch.setattr(deliver_module, "decide", broken)
    path = f"/teapot/{org}"
    wid, _ = await harness.hook(org, path)
    msg = await harness.produce(wid, org)
    dead = await harness.dead_letters(msg.delivery_id)
    assert len(dead) == 1
    assert "ValueError" in dead[0][1][REJECT_HEADER].decode()
    assert DeliveryMessage.decode(dead[0][0]).delivery_id == msg.delivery_id
    assert len(harness.requests(path)) == 1  # POSTed once, never again


async def test_an_outage_after_the_post_does_not_post_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, org: str
) -> None:
    real = Disabler.disable
    failures = [Unavailable("the database is unavailable: ConnectionResetError")]

    async def flaky(self: Disabler, webhook_id: str, reason: str) -> None:
        if failures:
            raise failures.pop()
        await real(self, webhook_id, reason)

    monkeypatch.setattr(Disabler, "disable", flaky)
    path = f"/gone/{org}/once"
    wid, _ = await harness.hook(org, path)
    msg = await harness.produce(wid, org)
    [row] = await harness.attempts(msg.delivery_id, 1)
    assert (row["outcome"], row["response_status"]) == ("dead", 410)
    assert failures == []  # the outage happened, and was retried past
    webhook = await harness.pool.fetchrow(
        "SELECT active FROM webhooks WHERE id = $1", uuid.UUID(wid)
    )
    assert webhook["active"] is False
    assert len(harness.requests(path)) == 1


async def test_a_row_the_log_refuses_goes_to_the_dead_letter_topic(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, org: str
) -> None:
    real = DeliveryLog.append

    def refusing(self: DeliveryLog, row: AttemptRow) -> asyncio.Future[None]:
        if row.org == org:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(RowRejected("delivery log refused the row: DataError()"))
            return fut
        return real(self, row)

    monkeypatch.setattr(DeliveryLog, "append", refusing)
    wid, _ = await harness.hook(org, f"/ok/{org}")
    msg = await harness.produce(wid, org)
    dead = await harness.dead_letters(msg.delivery_id)
    assert len(dead) == 1
    assert "refused" in dead[0][1][REJECT_HEADER].decode()


async def test_hostile_response_headers_and_body_are_stored_cleaned(
    harness: Harness, org: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 500 Oops\r\nX-Name: caf\xe9\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\na\x00b"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        wid, _ = await hook(
            harness.store,
            org,
            f"http://127.0.0.1:{port}/hook",
            retry={"max_retries": 0, "interval_s": 1},
        )
        msg = await harness.produce(wid, org)
        [row] = await harness.attempts(msg.delivery_id, 1)
    finally:
        server.close()
    assert (row["outcome"], row["response_status"]) == ("dead", 500)
    assert row["response_headers"]["X-Name"] == "caf\ufffd"
    assert row["response_body"] == "a\ufffdb"


async def test_an_undecryptable_secret_is_logged_dead_and_dead_lettered(
    harness: Harness, org: str
) -> None:
    other_key = base64.urlsafe_b64encode(b"another-key-the-sender-lacks!!!!").decode()
    foreign = WebhookStore(
        harness.pool,
        SecretBox(other_key),
        allow=harness.settings.allowed_targets,
        max_per_repo=100,
    )
    path = f"/ok/{org}/sealed"
    wid, _ = await hook(foreign, org, harness.receiver.base + path)
    msg = await harness.produce(wid, org)
    [row] = await harness.attempts(msg.delivery_id, 1)
    assert (row["outcome"], row["error"]) == ("dead", None)
    assert orjson.loads(row["request_body"]) == msg.body
    assert (await harness.summary(msg.delivery_id))["status"] == "dead"
    dead = await harness.dead_letters(msg.delivery_id)
    assert len(dead) == 1 and dead[0][1][REJECT_HEADER]
    assert harness.requests(path) == []


async def test_an_undecodable_message_reaches_the_dlq_despite_a_failed_publish(
    sender: Sender,
    produce_raw: ProduceRaw,
    topics: Topics,
    sender_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = AIOKafkaProducer.send_and_wait
    failures = [KafkaConnectionError("broker went away")]

    async def flaky(self: AIOKafkaProducer, topic: str, *args: Any, **kw: Any) -> Any:
        if topic == topics.dlq and failures:
            raise failures.pop()
        return await real(self, topic, *args, **kw)

    monkeypatch.setattr(AIOKafkaProducer, "send_and_wait", flaky)
    value = b"not json " + uuid.uuid4().hex.encode()
    await produce_raw(value)
    dead = await dead_letters(sender_settings, topics, lambda v: v == value)
    assert failures == []
    assert len(dead) == 1 and b"not JSON" in dead[0][1][REJECT_HEADER]
    # Its offset completes too: test_offsets_are_committed_... checks the ends, with what
    # came before them, in whichever order the two run.


async def test_a_repeat_attempt_takes_the_next_number_free_in_the_log(
    harness: Harness, org: str
) -> None:
    path = f"/ok/numbers-{org}"
    wid, _ = await harness.hook(org, path)
    first = await harness.produce(wid, org)
    await harness.attempts(first.delivery_id, 1)
    # A redelivery from the API reserved attempts 2 and 3 meanwhile (not yet sent).
    await harness.pool.execute(
        "UPDATE deliveries SET attempts = 3 WHERE id = $1", uuid.UUID(first.delivery_id)
    )
    producer = make_producer(harness.settings.kafka_bootstrap, client_id="test-numbers")
    await producer.start()
    try:
        retry = dataclasses.replace(first, attempt=2, trigger="retry")
        await producer.send_and_wait(harness.topics.deliveries, retry.encode(), key=retry.key)
        rows = await harness.attempts(first.delivery_id, 2)
        # The automatic retry asked for 2 and got 4; a message numbered by the API keeps
        # its number.
        manual = dataclasses.replace(first, attempt=3, trigger="manual", single=True, numbered=True)
        await producer.send_and_wait(harness.topics.deliveries, manual.encode(), key=manual.key)
        rows = await harness.attempts(first.delivery_id, 3)
    finally:
        await producer.stop()
    assert [(r["attempt"], r["trigger"]) for r in rows] == [
        (1, "auto"),
        (3, "manual"),
        (4, "retry"),
    ]
    sent = sorted(h["X-Hookline-Attempt"] for h, _ in harness.requests(path))
    assert sent == ["1", "3", "4"]
    assert (await harness.summary(first.delivery_id))["attempts"] == 4


async def test_offsets_are_committed_up_to_the_end_once_all_is_done(
    harness: Harness, org: str
) -> None:
    # Deliveries of its own, so that it proves something run alone or in any order; those
    # of other tests in this module are complete by the time they end.
    sent = []
    for n in range(4):  # webhooks are keys: likely both partitions
        wid, _secret = await harness.hook(org, f"/ok/{org}/ends-{n}")
        sent.append(await harness.produce(wid, org))
    for msg in sent:
        rows = await harness.attempts(msg.delivery_id, 1)
        assert [r["outcome"] for r in rows] == ["succeeded"]
    bootstrap = harness.settings.kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    consumer = make_consumer(bootstrap, group_id=None, client_id="test-sender-ends")
    await consumer.start()
    try:
        tps = [TopicPartition(harness.topics.deliveries, p) for p in (0, 1)]
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) > 0
        deadline = time.monotonic() + 20
        committed: dict[TopicPartition, int] = {}
        while time.monotonic() < deadline:
            got = await admin.list_consumer_group_offsets(harness.sender.group_id)
            committed = {tp: meta.offset for tp, meta in got.items()}
            if all(committed.get(tp, 0) >= ends[tp] for tp in tps):
                break
            await asyncio.sleep(0.1)
        # At least the ends: a retry of an earlier test's delivery may land (and be
        # committed) after they were read.
        assert all(committed.get(tp, 0) >= ends[tp] for tp in tps), (committed, ends)
    finally:
        await consumer.stop()
        await admin.close()


def test_tier_topics_cover_every_tier(topics: Topics) -> None:
    assert [topics.tier_of(topics.tier_topic(t)) for t in RETRY_TIERS] == list(RETRY_TIERS)


async def test_a_slow_webhook_is_parked_and_never_holds_up_a_fast_one(
    sender_settings: Settings, receiver: Receiver, store: WebhookStore, org: str
) -> None:
    # One partition: the slow webhook's messages sit in front of the fast one's.
    prefix, topics = await one_partition_topics(sender_settings, "park")
    settings = dataclasses.replace(sender_settings, sender_inflight_per_webhook=2)
    s = start_sender(settings, topics, prefix)
    producer = make_producer(settings.kafka_bootstrap, client_id=prefix + "p")
    await producer.start()
    try:
        await asyncio.wait_for(s.ready.wait(), 60)
        slow, _ = await hook(store, org, f"{receiver.base}/slow/{org}", timeout_s=10)
        fast, _ = await hook(store, org, f"{receiver.base}/ok/park-{org}")

        async def send(wids: list[str]) -> None:
            for wid in wids:
                msg = new_delivery(wid, org)
                await producer.send(topics.deliveries, msg.encode(), key=msg.key)
            await producer.flush()

        async def until(n: int, path: str) -> None:
            await received(receiver, path, n, timeout=20)

        await send([slow] * 2)  # its two slots, held for 3 s
        await until(2, f"/slow/{org}")
        await asyncio.sleep(1.0)  # they have been waiting a second: the queue would not drain
        await send([slow] * 28 + [fast] * 20)
        await until(20, f"/ok/park-{org}")
        # Every fast delivery arrived while the slow endpoint held its two slots.
        assert len(receiver.requests(f"/ok/park-{org}")) == 20
        assert len(receiver.requests(f"/slow/{org}")) <= 6

        # The slow webhook's overflow waits in a delay tier, due later (not attempted yet).
        consumer = make_consumer(
            settings.kafka_bootstrap, *topics.all_tiers(), group_id=None, client_id=prefix + "read"
        )
        await consumer.start()
        parked: list[DeliveryMessage] = []
        try:
            deadline = time.monotonic() + 10
            while not parked and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    parked += [DeliveryMessage.decode(r.value) for r in records]
        finally:
            await consumer.stop()
        assert parked and all(m.webhook_id == slow and m.parked for m in parked)
        assert all(m.attempt == 1 for m in parked)  # deferred, not counted as attempts
    finally:
        await producer.stop()
        s.stop.set()
        await asyncio.wait_for(s.task, 30)


async def test_a_stop_hands_off_unfinished_work_instead_of_replaying_what_follows_it(
    sender_settings: Settings, receiver: Receiver, store: WebhookStore, org: str
) -> None:
    # One partition: a request that hangs sits below every fast delivery after it.
    prefix, topics = await one_partition_topics(sender_settings, "handoff")
    tp = TopicPartition(topics.deliveries, 0)

    def start() -> tuple[Sender, asyncio.Event, asyncio.Task[None]]:
        s = start_sender(sender_settings, topics, prefix, drain_timeout=4.0)
        return s, s.stop, s.task

    async def until(n: int, path: str) -> None:
        await received(receiver, path, n, timeout=30)

    hang, _ = await hook(store, org, f"{receiver.base}/hang/{org}", timeout_s=10)
    fast, _ = await hook(store, org, f"{receiver.base}/ok/handoff-{org}")
    producer = make_producer(sender_settings.kafka_bootstrap, client_id=prefix + "p")
    await producer.start()
    first, stop, task = start()
    try:
        await asyncio.wait_for(first.ready.wait(), 60)
        hung = new_delivery(hang, org)
        await producer.send(topics.deliveries, hung.encode(), key=hung.key)
        for _ in range(10):
            msg = new_delivery(fast, org)
            await producer.send(topics.deliveries, msg.encode(), key=msg.key)
        await producer.flush()
        await until(10, f"/ok/handoff-{org}")
        await until(1, f"/hang/{org}")
        stop.set()
        await asyncio.wait_for(task, 30)  # 3 s, the hand-off, then the rest of 4 s

        # Committed past all eleven: the hanging one went back to the end of the partition.
        admin = AIOKafkaAdminClient(bootstrap_servers=sender_settings.kafka_bootstrap)
        await admin.start()
        try:
            got = await admin.list_consumer_group_offsets(prefix + "g")
        finally:
            await admin.close()
        assert got[tp].offset == 11

        # The next owner sends the hanging delivery again, and none of the fast ones.
        _second, stop, task = start()
        await until(2, f"/hang/{org}")
        sent = receiver.requests(f"/hang/{org}")
        assert len(sent) == 2
        assert {h["X-Hookline-Delivery"] for h, _ in sent} == {hung.delivery_id}
        await asyncio.sleep(1.0)
        assert len(receiver.requests(f"/ok/handoff-{org}")) == 10
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await producer.stop()
