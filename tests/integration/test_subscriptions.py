"""The in-memory subscription table follows `hookline.webhooks` as the store changes it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from services.relay.relay import Relay
from shared.config import Settings
from shared.core.messages import WebhookRecord
from shared.core.ssrf import Allowlist
from shared.crypto import SecretBox
from shared.kafka import TopicSpec, ensure_topics, make_producer
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore
from tests.integration.clients import started
from tests.records import webhook_record

# Its own database: a relay publishes every unpublished outbox row, only this module's.
pytestmark = pytest.mark.own_database

WAIT_S = 30.0
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
async def relay(pool: asyncpg.Pool, provisioned: Settings) -> AsyncIterator[Relay]:
    """A relay publishing the outbox while the test runs."""
    producer = make_producer(provisioned.kafka_bootstrap, client_id="test-subs-relay")
    await producer.start()
    relay = Relay(pool, producer, dsn=provisioned.database_url)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    yield relay
    stop.set()
    await asyncio.wait_for(task, 30)
    await producer.stop()


@pytest.fixture
def store(pool: asyncpg.Pool, settings: Settings) -> WebhookStore:
    return WebhookStore(
        pool,
        SecretBox(settings.secret_key),
        allow=Allowlist.parse("127.0.0.0/8"),
        max_per_repo=20,
    )


@pytest.fixture
async def table(provisioned: Settings) -> AsyncIterator[WebhookTable]:
    async with started(WebhookTable(provisioned.kafka_bootstrap, client_id="test-table")) as t:
        yield t


def ids(records: list[WebhookRecord]) -> set[str]:
    return {r.id for r in records}


async def test_table_follows_creates_updates_and_deletes(
    relay: Relay, store: WebhookStore, table: WebhookTable, org: str
) -> None:
    repo_hook, _ = await store.create(org, "widgets", {"url": URL, "events": ["push"]})
    other_repo_hook, _ = await store.create(org, "gadgets", {"url": URL, "events": ["*"]})
    org_hook, _ = await store.create(org, None, {"url": URL, "events": ["pull_request"]})
    for hook in (repo_hook, other_repo_hook, org_hook):
        assert await table.wait_for_revision(hook.id, 1, WAIT_S)

    # Repo-level hooks of that repo, plus the org's org-level hooks; nothing else.
    assert ids(table.subscribers(org, "widgets")) == {repo_hook.id, org_hook.id}
    assert ids(table.subscribers(org, "gadgets")) == {other_repo_hook.id, org_hook.id}
    assert ids(table.subscribers(org, "unknown")) == {org_hook.id}
    assert table.subscribers("org-nobody-" + uuid.uuid4().hex, "widgets") == []
    held = table.get(repo_hook.id)
    assert held is not None and held.events == ("push",) and held.repo == "widgets"
    assert held.secret_enc and "whsec_" not in held.secret_enc  # encrypted in transit

    # An update arrives with a higher revision; deactivating removes it from subscribers.
    await store.update(repo_hook.id, org, {"events": ["push", "release"]})
    assert await table.wait_for_revision(repo_hook.id, 2, WAIT_S)
    held = table.get(repo_hook.id)
    assert held is not None and held.events == ("push", "release")
    await store.update(org_hook.id, org, {"active": False})
    assert await table.wait_for_revision(org_hook.id, 2, WAIT_S)
    assert ids(table.subscribers(org, "widgets")) == {repo_hook.id}
    assert table.get(org_hook.id) is not None  # still known, just inactive

    # A delete publishes a tombstone: the webhook disappears.
    await store.delete(repo_hook.id, org)
    assert await table.wait_until(lambda: table.get(repo_hook.id) is None, WAIT_S)
    assert table.subscribers(org, "widgets") == []
    assert ids(table.subscribers(org, "gadgets")) == {other_repo_hook.id}


async def test_a_table_started_later_is_complete_when_start_returns(
    relay: Relay, store: WebhookStore, table: WebhookTable, provisioned: Settings, org: str
) -> None:
    kept, _ = await store.create(org, "widgets", {"url": URL, "events": ["push"]})
    gone, _ = await store.create(org, None, {"url": URL, "events": ["push"]})
    await store.update(kept.id, org, {"description": "second revision"})
    await store.delete(gone.id, org)
    # Wait until the first table has seen everything, so it is all on the topic.
    assert await table.wait_for_revision(kept.id, 2, WAIT_S)
    assert await table.wait_until(lambda: table.get(gone.id) is None, WAIT_S)

    late = WebhookTable(provisioned.kafka_bootstrap, client_id="test-table-late")
    await late.start()
    try:
        held = late.get(kept.id)  # no waiting: start() read up to the end offsets
        assert held is not None and held.revision == 2
        assert late.get(gone.id) is None
        assert ids(late.subscribers(org, "widgets")) == {kept.id}
    finally:
        await late.stop()


def _record(
    org: str, revision: int, *, repo: str | None = "widgets", **kw: object
) -> WebhookRecord:
    return webhook_record(org=org, repo=repo, url=URL, revision=revision, **kw)


async def test_put_ignores_older_revisions_and_moves_between_indexes(org: str) -> None:
    table = WebhookTable("127.0.0.1:1", client_id="unused")  # never started
    assert table.put(_record(org, 3))
    assert not table.put(_record(org, 2, active=False))  # out of order: ignored
    assert ids(table.subscribers(org, "widgets")) == {"hook-1"}
    assert table.put(_record(org, 4, repo=None))  # now org-level
    assert ids(table.subscribers(org, "anything")) == {"hook-1"}
    assert table._by_repo.get((org, "widgets")) is None  # left the old index
    table.remove("hook-1")
    assert table.get("hook-1") is None and table.subscribers(org, "anything") == []
    assert not table.put(_record(org, 5))  # a deleted webhook never comes back
    assert len(table) == 0


async def _own_topic(provisioned: Settings, *, partitions: int) -> str:
    """A webhooks topic of the test's own."""
    topic = "test.webhooks." + uuid.uuid4().hex[:8]
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(topic, partitions, {})])
    return topic


async def test_bad_records_are_skipped_and_following_goes_on(
    provisioned: Settings, org: str
) -> None:
    topic = await _own_topic(provisioned, partitions=2)
    table = WebhookTable(provisioned.kafka_bootstrap, client_id="test-bad", topic=topic)
    producer = make_producer(provisioned.kafka_bootstrap, client_id="t")
    async with started(producer):
        try:
            good = _record(org, 1, id="good")
            await producer.send_and_wait(topic, key=b"junk", value=b"not json")
            await producer.send_and_wait(topic, key=b"good", value=good.encode())
            await producer.send_and_wait(
                topic, key=b"gone", value=_record(org, 1, id="gone").encode()
            )
            await producer.send_and_wait(topic, key=b"gone", value=None)
            await table.start()
            assert table.get("good") == good and table.get("gone") is None and len(table) == 1

            # Following: garbage, then an older revision, then a newer one.
            await producer.send_and_wait(topic, key=b"good", value=b'{"id": "good"}')
            await producer.send_and_wait(
                topic, key=b"good", value=replace(good, revision=0).encode()
            )
            newer = replace(good, revision=2, active=False)
            await producer.send_and_wait(topic, key=b"good", value=newer.encode())
            assert await table.wait_for_revision("good", 2, WAIT_S)
            assert table.get("good") == newer and table.subscribers(org, "widgets") == []
        finally:
            with contextlib.suppress(Exception):
                await table.stop()


async def test_catch_up_returns_once_every_record_on_the_topic_is_in_the_table(
    provisioned: Settings, org: str
) -> None:
    topic = await _own_topic(provisioned, partitions=3)
    producer = make_producer(provisioned.kafka_bootstrap, client_id="t")
    # Right after the sends the background follower may still be behind the topic.
    table = WebhookTable(provisioned.kafka_bootstrap, client_id="test-catch-up", topic=topic)
    async with started(producer), started(table):
        for i in range(20):
            await producer.send_and_wait(
                topic, key=f"h{i}".encode(), value=_record(org, 1, id=f"h{i}").encode()
            )
        assert await table.catch_up(timeout=10)
        assert all(table.get(f"h{i}") is not None for i in range(20))
