"""Losing Kafka brokers loses nothing: the pipeline on a three-node KRaft cluster (topics on
three replicas, min.insync.replicas=2, producers acks=all), events flowing the whole time
while a broker leading partitions is killed -9 and restarted, then the active controller,
then one broker is lost for good. Every accepted event is delivered and logged, under the
one delivery id it always had. The figures per phase go to .hookline/test/brokerloss.json."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.config import Settings
from shared.core.messages import delivery_id_for
from shared.db import connect, migrate
from shared.kafka import DELIVERIES, EVENTS, ensure_topics, topic_specs, wait_for_kafka
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Pipeline, start_pipeline
from tests.e2e.harness import Receiver, eventually
from tests.infra import ROOT, TEST_HOME
from tests.kafka_cluster import KafkaCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(290)]
HOT = (EVENTS, DELIVERIES)
PATH = "/brokerloss"


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    port = int(os.environ.get("HOOKLINE_TEST_CLUSTER_PORT", "19600"))
    c = KafkaCluster(ROOT / ".hookline" / "test-cluster", port).start()
    yield c
    c.stop()


@pytest.fixture
async def database(provisioned: Settings) -> AsyncIterator[str]:
    """A database of its own: no other test's outbox rows or webhooks."""
    name = "brokerloss_" + uuid.uuid4().hex[:12]
    admin = await connect(provisioned.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(provisioned.database_url)._replace(path="/" + name))
    conn = await connect(url)
    await migrate(conn)
    await conn.close()
    yield url
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def log_bytes(conn: asyncpg.Connection) -> dict[str, float]:
    """The delivery log's size on disk per attempt (heap, TOAST and indexes of every
    partition of delivery_attempts, plus the deliveries summary table), for the README's
    PostgreSQL sizing."""
    attempts = await conn.fetchval("SELECT count(*) FROM delivery_attempts")
    size = await conn.fetchval(
        "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
        " WHERE inhparent = 'delivery_attempts'::regclass"
    )
    summary = await conn.fetchval("SELECT pg_total_relation_size('deliveries')")
    body = await conn.fetchval("SELECT avg(octet_length(request_body)) FROM delivery_attempts")
    return {
        "attempts": attempts,
        "attempt_bytes": round(float(size) / attempts, 1),
        "summary_bytes_per_delivery": round(float(summary) / attempts, 1),
        "avg_request_body_bytes": round(float(body or 0), 1),
    }


async def assert_durable(cluster: KafkaCluster) -> None:
    """What the test relies on, as the cluster itself reports it: the hot topics on three
    replicas needing two in sync, and every node's broker defaults the same (so the
    internal topics, consumer offsets included, survive a node too)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        for topic in await admin.describe_topics(list(HOT)):
            assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, topic
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in HOT]
        )
        for response in configs:
            for resource in response.resources:
                entries = {e[0]: e[1] for e in resource[4]}
                assert entries["min.insync.replicas"] == "2", resource[3]
    finally:
        await admin.close()
    for node in range(1, cluster.nodes + 1):
        props = (cluster.node_dir(node) / "server.properties").read_text().splitlines()
        for line in (
            "min.insync.replicas=2",
            "default.replication.factor=3",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.min.isr=2",
        ):
            assert line in props, (node, line)


@dataclass
class Load:
    """Events ingested through the API by a few clients for as long as it runs."""

    api_url: str
    org: str
    accepted: dict[str, float] = field(default_factory=dict)  # event id -> accepted at
    refused: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.api_url}/api/v1/repos/{self.org}/widgets/events"
        while not self._stop.is_set():
            try:
                async with session.post(url, json={"event": "push", "payload": {"n": 1}}) as r:
                    body = await r.json(content_type=None)
                    if r.status in (200, 202):
                        self.accepted[body["event_id"]] = time.time()
                    else:
                        self.refused += 1
            except aiohttp.ClientError:
                self.refused += 1
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            await asyncio.gather(*(self._client(session) for _ in range(4)))

    def stop(self) -> None:
        self._stop.set()


def phase_figures(name: str, t0: float, t1: float, load: Load, receiver: Receiver) -> dict:
    """Throughput and event->delivery latency for the events accepted in [t0, t1)."""
    firsts: dict[str, float] = {}
    for r in receiver.at(PATH):
        event_id = r.json()["event_id"]
        firsts[event_id] = min(firsts.get(event_id, r.at), r.at)
    window = [e for e, at in load.accepted.items() if t0 <= at < t1]
    latencies = sorted(firsts[e] - load.accepted[e] for e in window if e in firsts)
    delivered_in = sum(1 for at in firsts.values() if t0 <= at < t1)

    def pct(q: float) -> float | None:
        return (
            round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
            if latencies
            else None
        )

    return {
        "phase": name,
        "seconds": round(t1 - t0, 1),
        "accepted_per_s": round(len(window) / (t1 - t0), 1),
        "delivered_per_s": round(delivered_in / (t1 - t0), 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
    }


async def test_losing_brokers_loses_no_event_and_changes_no_delivery_id(
    cluster: KafkaCluster,
    database: str,
    service_env: dict[str, str],
    receiver: Receiver,
    org: str,
) -> None:
    await wait_for_kafka(cluster.bootstrap)
    await ensure_topics(cluster.bootstrap, topic_specs(partitions=6, replication=3))
    await assert_durable(cluster)
    pipeline: Pipeline = await start_pipeline(
        service_env,
        senders=2,
        HOOKLINE_DATABASE_URL=database,
        HOOKLINE_KAFKA_BOOTSTRAP=cluster.bootstrap,
        # The receiver shares this process with a machine busy restarting JVMs: a slow answer
        # is retried, but must not disable the webhook (start_pipeline's default is 3).
        HOOKLINE_DISABLE_AFTER_FAILURES="1000",
    )
    load = Load(pipeline.api_url, org)
    marks: list[tuple[str, float]] = []
    events: list[str] = []
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}) as s,
            s.post(
                f"{pipeline.api_url}/api/v1/repos/{org}/widgets/webhooks",
                json={"url": receiver.url(PATH), "events": ["*"]},
            ) as r,
        ):
            assert r.status == 201, await r.text()
            hook = await r.json()
        running = asyncio.create_task(load.run())
        await eventually(lambda: receiver.at(PATH), timeout=60, what="the first delivery")

        def mark(name: str) -> None:
            """The window called `name` starts now (and ends at the next mark)."""
            marks.append((name, time.time()))

        async def all_in_sync() -> None:
            await eventually(
                lambda: cluster.in_sync(*HOT), timeout=90, what="every replica in sync"
            )

        mark("steady")
        await asyncio.sleep(5)
        # 1. A broker that leads partitions, not the controller: kill -9, then restart.
        controller = cluster.active_controller()
        leaders = await cluster.leaders(*HOT)
        victim = next(n for n, _ in leaders.most_common() if n != controller)
        events.append(f"kill -9 broker {victim} (leads {leaders[victim]} partitions)")
        mark(f"broker {victim} down")
        await asyncio.to_thread(cluster.kill9, victim)
        await asyncio.sleep(10)
        mark(f"broker {victim} restarting, until in sync")
        await asyncio.to_thread(cluster.restart, victim)
        await all_in_sync()
        # 2. The active controller, itself leading partitions.
        controller = cluster.active_controller()
        leaders = await cluster.leaders(*HOT)
        assert leaders[controller] > 0, (controller, leaders)
        events.append(f"kill -9 active controller {controller} (leads {leaders[controller]})")
        mark(f"controller {controller} down")
        await asyncio.to_thread(cluster.kill9, controller)
        await asyncio.sleep(10)
        events.append(f"new active controller {cluster.active_controller()}")
        mark(f"controller {controller} restarting, until in sync")
        await asyncio.to_thread(cluster.restart, controller)
        await all_in_sync()
        # 3. One broker gone for good: two of three replicas stay, min.insync.replicas=2.
        leaders = await cluster.leaders(*HOT)
        gone = leaders.most_common(1)[0][0]
        events.append(f"kill -9 broker {gone} for good (leads {leaders[gone]})")
        mark(f"on two brokers (broker {gone} gone)")
        await asyncio.to_thread(cluster.kill9, gone)
        await asyncio.sleep(15)
        mark("load stopped, draining")
        load.stop()
        await running

        expected = {e: delivery_id_for(e, hook["id"]) for e in load.accepted}
        assert len(expected) > 500, f"too few events accepted to mean anything: {len(expected)}"

        def delivered() -> bool:
            got = {r.json()["event_id"] for r in receiver.at(PATH)}
            return set(expected) <= got

        try:
            await eventually(delivered, timeout=90, what="every accepted event delivered")
        except AssertionError:
            got = {r.json()["event_id"] for r in receiver.at(PATH)}
            missing = sorted(set(expected) - got, key=load.accepted.__getitem__)
            conn = await connect(database)
            unpublished = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            logged = await conn.fetchval("SELECT count(*) FROM deliveries")
            await conn.close()
            raise AssertionError(
                f"{len(missing)} of {len(expected)} not delivered (accepted at"
                f" {[round(load.accepted[m] - marks[0][1], 1) for m in missing[:5]]}...,"
                f" after steady+{[round(t - marks[0][1], 1) for _, t in marks]});"
                f" outbox unpublished {unpublished}, deliveries logged {logged}; {events}"
            ) from None
        ids_by_event: dict[str, set[str]] = {}
        for rec in receiver.at(PATH):
            ids_by_event.setdefault(rec.json()["event_id"], set()).add(rec.delivery_id)
        for event_id, delivery_id in expected.items():
            assert ids_by_event[event_id] == {delivery_id}, event_id

        conn = await connect(database)
        try:

            async def all_logged() -> bool:
                rows = await conn.fetch(
                    "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = 'succeeded'",
                    uuid.UUID(hook["id"]),
                )
                return set(expected.values()) <= {str(r["id"]) for r in rows}

            await eventually(all_logged, timeout=30, what="every delivery logged as succeeded")
            log_size = await log_bytes(conn)
        finally:
            await conn.close()
    finally:
        load.stop()
        pipeline.stop()

    bounds = [*marks, ("end", time.time())]
    figures = [
        phase_figures(name, t0, t1, load, receiver)
        for (name, t0), (_, t1) in itertools.pairwise(bounds)
    ]
    report = {
        "accepted": len(load.accepted),
        "refused_by_api": load.refused,
        "duplicate_receipts": len(receiver.at(PATH))
        - len({r.delivery_id for r in receiver.at(PATH)}),
        "faults": events,
        "delivery_log": log_size,
        "phases": figures,
    }
    (TEST_HOME / "brokerloss.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
