"""The pipeline-wide gauges the API's `/metrics` carries (DESIGN.md 11), read at scrape
time from PostgreSQL and Kafka and kept for a couple of seconds, so that a storm of
scrapes (several Prometheus replicas, several API replicas) costs one read per interval:

- `hookline_outbox_backlog`, `hookline_outbox_oldest_seconds`: unpublished outbox rows,
  and how long the oldest has waited;
- `hookline_consumer_lag{group,topic}`: per consumer group and topic, the end offsets
  minus the group's committed offsets (the earliest offset where it has none: where a new
  group starts), summed over partitions;
- `hookline_webhooks_disabled`: webhooks Hookline turned off (failures, 410 Gone).

A part that cannot be read (the database or the broker down) is left out of the
scrape rather than shown stale; `hookline_pipeline_up{source}` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.core.retry import RETRY_TIERS
from shared.kafka import (
    DELIVERIES,
    EVENTS,
    MATCHER_GROUP,
    RETRY_GROUP,
    SENDER_GROUP,
)

log = structlog.get_logger(component="metrics")

CACHE_S = 2.0
_TIMEOUT_S = 3.0
# Which topics each group consumes: the matcher, the senders, the senders' delay tiers.
GROUP_TOPICS: dict[str, tuple[str, ...]] = {
    MATCHER_GROUP: (EVENTS,),
    SENDER_GROUP: (DELIVERIES,),
    RETRY_GROUP: tuple(t.topic for t in RETRY_TIERS),
}
_OUTBOX = (
    "SELECT count(*) AS backlog,"
    " coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS oldest"
    " FROM outbox WHERE published_at IS NULL"
)
_DISABLED = "SELECT count(*) FROM webhooks WHERE NOT active AND disabled_reason IS NOT NULL"


@dataclass
class Snapshot:
    """One reading; None where its source could not be read."""

    backlog: int | None = None
    oldest_s: float | None = None
    disabled: int | None = None
    lag: dict[tuple[str, str], int] | None = None
    at: float = field(default=float("-inf"))


def lag_of(
    committed: dict[TopicPartition, int],
    begin: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
) -> int:
    """Messages a group has yet to consume on these partitions: from its committed
    offset (or, with none, the earliest one, where a new group starts) to the end."""
    total = 0
    for tp, last in end.items():
        start = committed.get(tp)
        if start is None or start < 0:
            start = begin.get(tp, 0)
        total += max(0, last - start)
    return total


class KafkaLag:
    """An admin client (committed offsets) and a group-less consumer (end offsets), opened
    on first use and reopened after a failure."""

    def __init__(self, bootstrap: str, groups: dict[str, tuple[str, ...]] | None = None) -> None:
        self._bootstrap = bootstrap
        self._groups = groups or GROUP_TOPICS
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self) -> dict[tuple[str, str], int]:
        admin, consumer = await self._clients()
        wanted = {t for topics in self._groups.values() for t in topics}
        cluster = await consumer._client.fetch_all_metadata()  # one round trip for all
        parts = {
            t: [TopicPartition(t, p) for p in sorted(cluster.partitions_for_topic(t) or ())]
            for t in wanted
        }
        tps = [tp for ps in parts.values() for tp in ps]
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        out: dict[tuple[str, str], int] = {}
        for group, topics in self._groups.items():
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            for topic in topics:
                mine = {tp: end[tp] for tp in parts[topic]}
                out[(group, topic)] = lag_of(committed, begin, mine)
        return out

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap, request_timeout_ms=int(_TIMEOUT_S * 1000)
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=int(_TIMEOUT_S * 1000),
            )
            self._admin, self._consumer = admin, consumer  # so close() cleans up a failure
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    if isinstance(client, AIOKafkaConsumer):
                        await client.stop()
                    else:
                        await client.close()


class PipelineGauges(Collector):
    """A collector over the last snapshot; `refresh()` (awaited by the `/metrics`
    handler before rendering) reads a new one when the last is over CACHE_S old."""

    def __init__(self, pool: asyncpg.Pool, lag: KafkaLag, *, cache_s: float = CACHE_S) -> None:
        self._pool = pool
        self._lag = lag
        self._cache_s = cache_s
        self._snapshot = Snapshot()
        self._lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def refresh(self) -> Snapshot:
        async with self._lock:  # concurrent scrapes wait for the one reading
            if time.monotonic() - self._snapshot.at < self._cache_s:
                return self._snapshot
            db, kafka = await asyncio.gather(
                self._guard(self._read_db(), "database"),
                self._guard(self._lag.read(), "kafka"),
            )
            snap = Snapshot(at=time.monotonic())
            if db is not None:
                snap.backlog, snap.oldest_s, snap.disabled = db  # type: ignore[misc]
            if kafka is None:
                await self._lag.close()  # reopened on the next scrape
            snap.lag = kafka  # type: ignore[assignment]
            self._snapshot = snap
            return snap

    async def _guard(self, coro: Awaitable[object], source: str) -> object:
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                return await coro
        except Exception as exc:  # an outage: that part is left out of this scrape
            log.warning("pipeline gauges unavailable", source=source, error=repr(exc))
            return None

    async def _read_db(self) -> tuple[int, float, int]:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_OUTBOX)
            disabled = await conn.fetchval(_DISABLED)
        return int(row["backlog"]), float(row["oldest"]), int(disabled)

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot))

    def _families(self, s: Snapshot) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "hookline_pipeline_up",
            "Whether the last reading of the pipeline gauges reached each source.",
            labels=["source"],
        )
        up.add_metric(["database"], 0 if s.backlog is None else 1)
        up.add_metric(["kafka"], 0 if s.lag is None else 1)
        yield up
        if s.backlog is not None and s.oldest_s is not None and s.disabled is not None:
            yield GaugeMetricFamily(
                "hookline_outbox_backlog", "Outbox rows not yet published.", value=s.backlog
            )
            yield GaugeMetricFamily(
                "hookline_outbox_oldest_seconds",
                "How long the oldest unpublished outbox row has waited (0: none waits).",
                value=s.oldest_s,
            )
            yield GaugeMetricFamily(
                "hookline_webhooks_disabled",
                "Webhooks Hookline disabled (consecutive failures, 410 Gone).",
                value=s.disabled,
            )
        if s.lag is not None:
            lag = GaugeMetricFamily(
                "hookline_consumer_lag",
                "Messages a consumer group has yet to consume: end offsets minus committed "
                "offsets, summed over a topic's partitions.",
                labels=["group", "topic"],
            )
            for (group, topic), value in sorted(s.lag.items()):
                lag.add_metric([group, topic], value)
            yield lag
