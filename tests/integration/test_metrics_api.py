"""The API's `/metrics` in-process: no token needed, ingest answers and refusals counted
by status and limit, the pipeline gauges read once for many scrapes, and a source that
cannot be read left out rather than shown stale."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

import asyncpg
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from shared.pipeline_metrics import CACHE_S, KafkaLag, PipelineGauges, Snapshot, lag_of
from tests.integration.api_support import api_client, org_token

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_ingest_answers_and_rate_limit_refusals_are_counted(
    provisioned: Settings, org: str
) -> None:
    limited = dataclasses.replace(provisioned, ingest_rate_per_org=2)
    async with api_client(limited) as client:
        headers = await org_token(client, limited, org)

        async def scrape() -> Samples:
            resp = await client.get("/metrics")  # no token
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return parse(await resp.text())

        before = await scrape()
        path = f"/api/v1/repos/{org}/widgets/events"
        bad = await client.post(path, json={"event": "nope", "payload": {}}, headers=headers)
        ok = await client.post(path, json={"event": "push", "payload": {}}, headers=headers)
        over = await client.post(path, json={"event": "push", "payload": {}}, headers=headers)
        assert (bad.status, ok.status, over.status) == (422, 202, 429)
        batch = await client.post(
            "/api/v1/events/batch",
            json={"events": [{"org": org, "repo": "w", "event": "push", "payload": {}}]},
            headers=headers,
        )
        assert batch.status == 200
        after = await scrape()
        # A broker started moments ago may not have named its group coordinators yet (the
        # lag read fails, so kafka shows down): look again while it settles.
        deadline = time.monotonic() + 30
        while value(after, "hookline_pipeline_up", source="kafka") != 1:
            assert time.monotonic() < deadline, "kafka never showed up in the pipeline gauges"
            await asyncio.sleep(CACHE_S)
            after = await scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "hookline_ingest_requests_total"
    assert moved(requests, route="events", status="422") == 1
    assert moved(requests, route="events", status="202") == 1
    assert moved(requests, route="events", status="429") == 1
    assert moved(requests, route="batch", status="200") == 1
    # The batch's one event was over the limit too: refused inside a 200.
    assert moved("hookline_rate_limited_total", limit="ingest") == 2
    assert moved("hookline_rate_limited_total", limit="manage") == 0
    assert value(after, "hookline_pipeline_up", source="database") == 1
    assert value(after, "hookline_pipeline_up", source="kafka") == 1


async def test_hookline_metrics_0_serves_no_metrics_on_the_api(provisioned: Settings) -> None:
    async with api_client(dataclasses.replace(provisioned, metrics=False)) as client:
        assert (await client.get("/metrics")).status == 404


class CountingGauges(PipelineGauges):
    reads = 0

    async def _read_db(self) -> tuple[int, float, int]:
        self.reads += 1
        return await super()._read_db()


async def test_concurrent_scrapes_share_one_reading(pool: asyncpg.Pool, settings: Settings) -> None:
    lag = KafkaLag(settings.kafka_bootstrap)
    gauges = CountingGauges(pool, lag, cache_s=0.5)
    try:
        snaps = await asyncio.gather(*(gauges.refresh() for _ in range(20)))
        assert gauges.reads == 1 and all(s is snaps[0] for s in snaps)
        await asyncio.sleep(0.6)
        await gauges.refresh()
        assert gauges.reads == 2
    finally:
        await lag.close()


async def test_an_unreachable_kafka_leaves_the_lag_out_not_stale(
    pool: asyncpg.Pool,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    lag = KafkaLag(f"127.0.0.1:{closed}")
    gauges = PipelineGauges(pool, lag, cache_s=0)
    gauges._snapshot = Snapshot(lag={("hookline-matcher", "hookline.events"): 5})
    try:
        snap = await gauges.refresh()
    finally:
        await lag.close()
    assert snap.lag is None and snap.backlog is not None
    names = {f.name: f for f in gauges.collect()}
    assert "hookline_consumer_lag" not in names
    assert "hookline_outbox_backlog" in names
    up = {s.labels["source"]: s.value for s in names["hookline_pipeline_up"].samples}
    assert up == {"database": 1, "kafka": 0}


def test_lag_counts_from_the_commit_or_from_the_earliest_offset() -> None:
    a, b, c = (TopicPartition("t", p) for p in range(3))
    end = {a: 10, b: 7, c: 4}
    begin = {a: 0, b: 2, c: 4}
    # a committed at 6; b never committed (a new group starts at the earliest, 2); c empty.
    assert lag_of({a: 6, b: -1}, begin, end) == 4 + 5 + 0
    assert lag_of({a: 10, b: 7, c: 4}, begin, end) == 0
