"""Issue 13: Prometheus metrics scraped from real processes. After a delivery, a failure
and a dead letter the counters move; the API's pipeline gauges follow the outbox, the
consumer groups and disabled webhooks; every worker serves `/metrics` on
HOOKLINE_METRICS_PORT."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from tests.e2e.conftest import Pipeline, free_port, start_pipeline
from tests.e2e.harness import Receiver, ServiceProcess, answer, eventually, hang, logs_of
from tests.e2e.test_pipeline import Api, ingest

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample of a `/metrics` answer, parsed by prometheus_client's own parser (a
    malformed exposition fails here)."""
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def has(samples: Samples, name: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == name and want <= ls for (n, ls) in samples)


@pytest.fixture(scope="module")
async def metered(
    provisioned: Settings, service_env: dict[str, str]
) -> AsyncIterator[tuple[Pipeline, str]]:
    """The pipeline with one sender whose /metrics is on a port of its own: every attempt
    is counted there."""
    pipeline = await start_pipeline(service_env, senders=0)
    port = free_port()
    sender = pipeline.start("sender", HOOKLINE_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"

    async def up() -> bool:
        assert sender.alive, logs_of([sender])
        try:
            await scrape(url)
        except aiohttp.ClientError:
            return False
        return True

    try:
        await eventually(up, timeout=60, what="the sender's /metrics")
        yield pipeline, url
    finally:
        pipeline.stop()


async def test_a_delivery_a_failure_and_a_dead_letter_move_the_counters(
    metered: tuple[Pipeline, str], receiver: Receiver, org: str
) -> None:
    pipeline, sender_url = metered
    api_url = pipeline.api_url + "/metrics"
    api = Api(pipeline.api_url)
    receiver.behaviours["/fail"] = answer(500)
    receiver.behaviours["/gone"] = answer(410)
    await api.webhook(org, "ok", receiver.url("/ok"), events=["push"])
    # One retry after 1 s, then dead: a failure, a retry in the 1 s tier, a dead letter.
    await api.webhook(org, "fail", receiver.url("/fail"), events=["push"], retry={"schedule": [1]})
    # 410 Gone: dead at once, dead-lettered, and the webhook disabled.
    await api.webhook(org, "gone", receiver.url("/gone"), events=["push"])
    before, api_before = await scrape(sender_url), await scrape(api_url)

    for repo in ("ok", "fail", "gone"):
        await ingest(api, org, repo, "push", {"ref": "refs/heads/main"})
    await eventually(lambda: len(receiver.at("/fail")) >= 2, timeout=60, what="both attempts")
    await eventually(lambda: receiver.at("/ok") and receiver.at("/gone"), what="the deliveries")

    def moved(after: Samples, name: str, **kw: str) -> float:
        return value(after, name, **kw) - value(before, name, **kw)

    async def counted() -> bool:
        after = await scrape(sender_url)
        attempts = "hookline_delivery_attempts_total"
        return (
            moved(after, attempts, outcome="succeeded", error="none") >= 1
            and moved(after, attempts, outcome="failed", error="http_status") >= 1
            and moved(after, attempts, outcome="dead", error="http_status") >= 2
            and moved(after, "hookline_retries_total", tier="1s") >= 1
            and moved(after, "hookline_dead_letters_total") >= 2
            and moved(after, "hookline_attempt_duration_seconds_count") >= 4
            and moved(after, "hookline_log_batch_rows_sum") >= 4
        )

    await eventually(counted, timeout=30, what="the sender's counters to move")
    # (At least: retries left in the delay tiers by earlier tests may reach this sender.)
    after = await scrape(sender_url)

    async def api_moved() -> bool:
        now = await scrape(api_url)
        ingested = value(now, "hookline_ingest_requests_total", route="events", status="202")
        disabled = value(now, "hookline_webhooks_disabled")
        return (
            ingested
            - value(api_before, "hookline_ingest_requests_total", route="events", status="202")
            >= 3
            and disabled - value(api_before, "hookline_webhooks_disabled") >= 1
        )

    await eventually(api_moved, timeout=30, what="the API's ingest count and disabled gauge")
    # No label carries tenant data: not the org, not a webhook's URL.
    for samples in (after, await scrape(api_url)):
        for _name, labels in samples:
            assert not any(org in v or "127.0.0.1" in v for _k, v in labels)


async def test_in_flight_requests_are_shown_while_a_request_hangs(
    metered: tuple[Pipeline, str], receiver: Receiver, org: str
) -> None:
    pipeline, sender_url = metered
    api = Api(pipeline.api_url)
    receiver.behaviours["/slow"] = hang(6)
    await api.webhook(org, "slow", receiver.url("/slow"), events=["push"])
    await ingest(api, org, "slow", "push", {})
    await eventually(lambda: receiver.at("/slow"), what="the hanging request")

    async def in_flight() -> float:
        return value(await scrape(sender_url), "hookline_requests_in_flight")

    async def none_in_flight() -> bool:
        return await in_flight() == 0

    assert await eventually(in_flight, what="an in-flight request") >= 1
    await eventually(none_in_flight, timeout=30, what="the request to end")


async def test_a_stopped_relay_shows_the_outbox_backlog_and_its_age(
    metered: tuple[Pipeline, str], org: str
) -> None:
    pipeline, _ = metered
    api, url = Api(pipeline.api_url), pipeline.api_url + "/metrics"
    relay = pipeline.running("relay")[0]
    assert relay.stop() == 0
    try:
        base = value(await scrape(url), "hookline_outbox_backlog")
        for n in range(5):
            await ingest(api, org, "backlog", "push", {"n": n})

        async def waiting() -> bool:
            now = await scrape(url)
            return (
                value(now, "hookline_outbox_backlog") >= base + 5
                and value(now, "hookline_outbox_oldest_seconds") >= 2.0
                and value(now, "hookline_pipeline_up", source="database") == 1
            )

        await eventually(waiting, timeout=30, what="the backlog and its age")
    finally:
        pipeline.start("relay")

    async def drained() -> bool:
        now = await scrape(url)
        return value(now, "hookline_outbox_backlog") == 0 and has(now, "hookline_outbox_backlog")

    await eventually(drained, timeout=60, what="the restarted relay to drain the outbox")
    assert value(await scrape(url), "hookline_outbox_oldest_seconds") == 0


async def test_a_stopped_matcher_shows_its_consumer_lag_rising(
    metered: tuple[Pipeline, str], org: str
) -> None:
    pipeline, _ = metered
    api, url = Api(pipeline.api_url), pipeline.api_url + "/metrics"
    group = {"group": "hookline-matcher", "topic": "hookline.events"}
    first = await scrape(url)
    # Every group and topic the pipeline consumes is reported.
    for g, topic in (
        ("hookline-matcher", "hookline.events"),
        ("hookline-sender", "hookline.deliveries"),
        ("hookline-sender-retry", "hookline.retry.1s"),
        ("hookline-sender-retry", "hookline.retry.2h"),
    ):
        assert has(first, "hookline_consumer_lag", group=g, topic=topic), (g, topic)
    matcher = pipeline.running("matcher")[0]
    assert matcher.stop() == 0
    try:
        base = value(await scrape(url), "hookline_consumer_lag", **group)
        for n in range(7):
            await ingest(api, org, "lag", "push", {"n": n})

        async def lagging() -> bool:
            return value(await scrape(url), "hookline_consumer_lag", **group) >= base + 7

        await eventually(lagging, timeout=30, what="the matcher's lag to rise by 7")
    finally:
        pipeline.start("matcher")

    async def caught_up() -> bool:
        return value(await scrape(url), "hookline_consumer_lag", **group) == 0

    await eventually(caught_up, timeout=90, what="the restarted matcher to catch up")


@pytest.mark.parametrize("worker", ["relay", "matcher", "sender", "inbound"])
async def test_a_worker_serves_metrics_on_its_metrics_port(
    provisioned: Settings, service_env: dict[str, str], worker: str
) -> None:
    port = free_port()
    proc = ServiceProcess(
        worker,
        {**service_env, "HOOKLINE_METRICS_PORT": str(port), "HOOKLINE_INBOUND_PORT": "0"},
        instance=f"e2e-metrics-{worker}",
    ).start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        async def served() -> Samples | None:
            assert proc.alive, logs_of([proc])
            try:
                return await scrape(url)
            except aiohttp.ClientError:
                return None

        samples = await eventually(served, timeout=30, what="the worker's /metrics")
        names = {name for name, _ in samples}
        assert all(name.startswith("hookline_") for name in names), names
        assert value(samples, "hookline_process_resident_memory_bytes") > 0
        own = {
            "relay": "hookline_relay_published_total",
            "matcher": "hookline_matcher_fanout_count",
            "sender": "hookline_requests_in_flight",
            "inbound": "hookline_rate_limited_total",
        }[worker]
        assert own in names
        # The pipeline gauges are the API's alone.
        assert "hookline_consumer_lag" not in names
    finally:
        assert proc.stop() == 0, logs_of([proc])


async def test_hookline_metrics_0_serves_no_metrics(
    provisioned: Settings, service_env: dict[str, str]
) -> None:
    port = free_port()
    proc = ServiceProcess(
        "relay",
        {**service_env, "HOOKLINE_METRICS_PORT": str(port), "HOOKLINE_METRICS": "0"},
        instance="e2e-metrics-off",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"

        async def status(path: str) -> int:
            try:
                async with aiohttp.ClientSession() as s, s.get(base + path) as r:
                    return r.status
            except aiohttp.ClientError:
                return 0

        assert await eventually(lambda: status("/healthz"), what="/healthz") == 200
        assert await status("/metrics") == 404
    finally:
        proc.stop()
