"""Helpers for the tests of a sender `serve`d in-process: the receiver it posts to, a
replica started on topics of its own, and what a test reads back (attempts, summaries,
dead letters). The fixtures built on them are in conftest.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from services.sender.main import serve
from services.sender.retry_tiers import Topics
from shared.config import Settings
from shared.core.messages import DeliveryMessage, delivery_id_for
from shared.kafka import TopicSpec, ensure_topics, make_consumer
from shared.webhooks import WebhookStore

Produce = Callable[..., Awaitable[DeliveryMessage]]
ProduceRaw = Callable[[bytes], Awaitable[None]]
DeadLetter = tuple[bytes, dict[str, bytes]]


@dataclass
class Receiver:
    """An HTTP endpoint whose paths behave as the tests need; it records every request."""

    base: str = ""
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)

    def requests(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.seen if p == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        self.seen.append((path, dict(request.headers), body))
        kind = path.split("/")[1]
        if kind == "ok":
            return web.Response(text="thanks")
        if kind == "flaky":  # fails as many times as fail_first says, then succeeds
            left = self.fail_first.get(path, 0)
            if left > 0:
                self.fail_first[path] = left - 1
                return web.Response(status=500, text="try again")
            return web.Response(text="ok now")
        if kind == "gone":
            return web.Response(status=410)
        if kind == "teapot":
            return web.Response(status=418)
        if kind == "slow":
            await asyncio.sleep(3)
            return web.Response(text="too late")
        if kind == "hang":  # longer than a sender waits before handing off
            await asyncio.sleep(8)
            return web.Response(text="much too late")
        if kind == "busy":  # one 429 asking for 2 s, then fine
            if len(self.requests(path)) == 1:
                return web.Response(status=429, headers={"Retry-After": "2"})
            return web.Response(text="ok")
        return web.Response(status=500, text="x" * 20000)  # "fail": always, long body


@dataclass
class Sender:
    """A sender replica `serve`d in this process."""

    group_id: str
    stop: asyncio.Event
    ready: asyncio.Event
    task: asyncio.Task[None]


def start_sender(settings: Settings, topics: Topics, prefix: str, **kw: Any) -> Sender:
    """A replica on `topics`, its consumer groups and client id named after `prefix`."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(
            settings,
            stop,
            topics=topics,
            group_id=prefix + "g",
            retry_group_id=prefix + "rg",
            client_id=prefix + "c",
            ready=ready,
            **kw,
        )
    )
    return Sender(prefix + "g", stop, ready, task)


def new_delivery(webhook_id: str, org: str, event: str = "push", **fields: Any) -> DeliveryMessage:
    """The first attempt at delivering a new event to one webhook; its body is
    `{"event": event}` unless `fields` give one."""
    event_id = str(uuid.uuid4())
    return DeliveryMessage(
        delivery_id=delivery_id_for(event_id, webhook_id),
        webhook_id=webhook_id,
        org=org,
        event_id=event_id,
        event_type=event,
        **{"body": {"event": event}, **fields},
    )


async def received(receiver: Receiver, path: str, count: int, timeout: float) -> None:
    """Returns once the receiver has `count` requests on `path`, or at the timeout."""
    deadline = time.monotonic() + timeout
    while len(receiver.requests(path)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def one_partition_topics(settings: Settings, name: str) -> tuple[str, Topics]:
    """A private set of one-partition topics (every message of the test in one order)."""
    prefix = f"test-{name}-{uuid.uuid4().hex[:8]}."
    topics = Topics(
        deliveries=prefix + "deliveries", dlq=prefix + "dlq", retry_prefix=prefix + "r."
    )
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(n, 1, {}) for n in topics.all()])
    return prefix, topics


async def hook(store: WebhookStore, org: str, url: str, **fields: Any) -> tuple[str, str]:
    """A webhook of `org` on `url` for every event: (its id, its secret)."""
    webhook, secret = await store.create(org, "r", {"url": url, "events": ["*"], **fields})
    return webhook.id, secret


async def dead_letters(
    settings: Settings, topics: Topics, match: Callable[[bytes], bool], timeout: float = 20.0
) -> list[DeadLetter]:
    """Every dead-letter record whose value `match`es (waits until there is one)."""
    consumer = make_consumer(
        settings.kafka_bootstrap, topics.dlq, group_id=None, client_id="test-dlq-read"
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                found += [(r.value, dict(r.headers)) for r in records if match(r.value)]
    finally:
        await consumer.stop()
    return found


async def attempts(
    pool: asyncpg.Pool, delivery_id: str, count: int, timeout: float = 30.0
) -> list[asyncpg.Record]:
    """The delivery's logged attempts, in order, once there are `count` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt, started_at",
            uuid.UUID(delivery_id),
        )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def summary(pool: asyncpg.Pool, delivery_id: str) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", uuid.UUID(delivery_id))


@dataclass(frozen=True)
class Harness:
    """The module's running sender, the receiver it posts to, the store its webhooks are
    made in and the producer that feeds it: what a test of a running sender drives."""

    sender: Sender
    receiver: Receiver
    store: WebhookStore
    produce: Produce
    pool: asyncpg.Pool
    topics: Topics
    settings: Settings

    async def hook(self, org: str, path: str, **fields: Any) -> tuple[str, str]:
        """A webhook of `org` on the receiver's `path`: (its id, its secret)."""
        return await hook(self.store, org, self.receiver.base + path, **fields)

    async def attempts(self, delivery_id: str, count: int) -> list[asyncpg.Record]:
        return await attempts(self.pool, delivery_id, count)

    async def summary(self, delivery_id: str) -> asyncpg.Record:
        return await summary(self.pool, delivery_id)

    async def dead_letters(self, delivery_id: str) -> list[DeadLetter]:
        """The dead-letter records of one delivery (the topic also holds what other tests
        of the module dead-lettered, undecodable records included)."""
        return await dead_letters(
            self.settings, self.topics, lambda v: delivery_id.encode() in (v or b"")
        )

    def requests(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return self.receiver.requests(path)
