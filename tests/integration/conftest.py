"""Fixtures shared by the integration modules: the API app, the inbound edge, and a sender
replica with the receiver it posts to. Each is module-scoped where it starts something (an
app, a sender, a receiver, topics, a producer): a module that asks for it gets one of its
own, never another module's."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.sender.retry_tiers import Topics
from shared.config import Settings
from shared.core.messages import DeliveryMessage
from shared.crypto import SecretBox
from shared.kafka import TopicSpec, ensure_topics, make_producer
from shared.webhooks import WebhookStore
from tests.integration.api_support import api_client, edge_client, org_token
from tests.integration.sender_support import (
    Harness,
    Produce,
    ProduceRaw,
    Receiver,
    Sender,
    new_delivery,
    start_sender,
)


@pytest.fixture(scope="module")
async def api(provisioned: Settings) -> AsyncIterator[TestClient]:
    """The API app, with its own pool, on a loopback test server: one per module."""
    async with api_client(provisioned) as client:
        yield client


@pytest.fixture
async def owner(api: TestClient, settings: Settings, org: str) -> dict[str, str]:
    """Headers carrying a fresh token of the test's `org`, made through the module's `api`."""
    return await org_token(api, settings, org)


@pytest.fixture(scope="module")
async def edge(provisioned: Settings) -> AsyncIterator[TestClient]:
    """The inbound edge on a loopback test server: one per module."""
    async with edge_client(provisioned) as client:
        yield client


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture(scope="module")
async def topics(provisioned: Settings) -> Topics:
    """The sender's topics, two partitions each, named for this module only."""
    prefix = f"test-sender-{uuid.uuid4().hex[:8]}."
    t = Topics(deliveries=prefix + "deliveries", dlq=prefix + "dlq", retry_prefix=prefix + "retry.")
    await ensure_topics(provisioned.kafka_bootstrap, [TopicSpec(n, 2, {}) for n in t.all()])
    return t


@pytest.fixture(scope="module")
def sender_settings(provisioned: Settings) -> Settings:
    return dataclasses.replace(provisioned, disable_after_failures=3, disable_after_seconds=0)


@pytest.fixture(scope="module")
async def sender(
    sender_settings: Settings, topics: Topics, pool: asyncpg.Pool
) -> AsyncIterator[Sender]:
    """The module's sender replica on `topics`, once it has its partitions."""
    s = start_sender(sender_settings, topics, f"test-sender-{uuid.uuid4().hex[:8]}-")
    ready = asyncio.create_task(s.ready.wait())
    await asyncio.wait({s.task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if s.task.done():
        s.task.result()  # raises what broke it
    assert s.ready.is_set(), "sender never got its partitions"
    yield s
    s.stop.set()
    await asyncio.wait_for(s.task, 30)


@pytest.fixture(scope="module")
def store(sender_settings: Settings, pool: asyncpg.Pool) -> WebhookStore:
    return WebhookStore(
        pool,
        SecretBox(sender_settings.secret_key),
        allow=sender_settings.allowed_targets,
        max_per_repo=100,
    )


@pytest.fixture(scope="module")
async def produce(sender_settings: Settings, topics: Topics) -> AsyncIterator[Produce]:
    """Sends a delivery of one webhook to the sender's topic; returns the message."""
    producer = make_producer(sender_settings.kafka_bootstrap, client_id="test-sender-producer")
    await producer.start()

    async def send(webhook_id: str, org: str, event: str = "push") -> DeliveryMessage:
        msg = new_delivery(webhook_id, org, event, enqueued_at=time.time())
        msg = dataclasses.replace(
            msg,
            body={
                "event": event,
                "event_id": msg.event_id,
                "repository": {"full_name": org + "/r"},
            },
        )
        await producer.send_and_wait(topics.deliveries, msg.encode(), key=msg.key)
        return msg

    yield send
    await producer.stop()


@pytest.fixture(scope="module")
async def produce_raw(sender_settings: Settings, topics: Topics) -> AsyncIterator[ProduceRaw]:
    """Sends any bytes to the sender's topic."""
    producer = make_producer(sender_settings.kafka_bootstrap, client_id="test-sender-raw")
    await producer.start()

    async def send(value: bytes) -> None:
        await producer.send_and_wait(topics.deliveries, value, key=b"raw")

    yield send
    await producer.stop()


@pytest.fixture(scope="module")
def harness(
    sender: Sender,
    receiver: Receiver,
    store: WebhookStore,
    produce: Produce,
    pool: asyncpg.Pool,
    topics: Topics,
    sender_settings: Settings,
) -> Harness:
    """The module's running sender with all a test drives it through."""
    return Harness(sender, receiver, store, produce, pool, topics, sender_settings)
