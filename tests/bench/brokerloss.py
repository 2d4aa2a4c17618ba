"""`make bench` phase `brokerloss` (opt-in: `python -m tests.bench --phases brokerloss`): the
Kafka side of the pipeline (relay, matcher, senders) moved onto a three-node KRaft cluster
(topics on three replicas, min.insync.replicas=2), a paced load through the faults of
tests/e2e/test_broker_loss.py: kill -9 a broker leading partitions, restart it; kill -9
the active controller, restart it; then one broker gone for good. Throughput and
event->delivery latency are reported per window, with what went missing or twice.

It runs last (it leaves the bench's own workers stopped); its cluster has its own home
and ports (.hookline/bench-cluster, HOOKLINE_BENCH_CLUSTER_PORT, default 19620..19625)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.kafka import DELIVERIES, EVENTS, ensure_topics, topic_specs, wait_for_kafka
from tests.bench.cluster import Cluster
from tests.bench.load import Ingest, paced
from tests.bench.phases import Bench, fmt, say
from tests.infra import ROOT
from tests.kafka_cluster import KafkaCluster

CLUSTER_HOME = ROOT / ".hookline" / "bench-cluster"
CLUSTER_PORT = int(os.environ.get("HOOKLINE_BENCH_CLUSTER_PORT", "19620"))
HOT = (EVENTS, DELIVERIES)
WINDOW_S = 10.0
# A window's drain gives up after 15 s without progress, but a delivery parked in a delay
# tier (a webhook over its concurrency, a 1-minute retry) comes back only when its tier is
# due: before calling anything missing, every window gets this long more, all together.
LATE_WAIT_S = 180.0
WORKERS = ("relay", "matcher", "sender")


async def _until_in_sync(kc: KafkaCluster, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if await kc.in_sync(*HOT):
                break
        except Exception:  # a metadata request during an election: ask again
            pass
        await asyncio.sleep(0.5)
    return round(time.monotonic() - start, 1)


async def brokerloss(b: Bench) -> None:
    b.enter("brokerloss")
    kc = KafkaCluster(CLUSTER_HOME, CLUSTER_PORT)
    await asyncio.to_thread(kc.start)
    moved = Cluster(
        env={**b.cluster.env, "HOOKLINE_KAFKA_BOOTSTRAP": kc.bootstrap}, log_dir=b.cluster.log_dir
    )
    ingest: Ingest | None = None
    try:
        await wait_for_kafka(kc.bootstrap)
        await ensure_topics(kc.bootstrap, topic_specs(replication=3))
        # The API and the inbound edge write only to PostgreSQL on the hot path: they stay.
        for name in WORKERS:
            for proc in b.cluster.running(name):
                await asyncio.to_thread(b.cluster.stop_one, proc)
        moved.start("relay")
        moved.start("matcher")
        for _ in range(b.plan.senders):
            moved.start("sender")
        ingest = await Ingest(
            b.ingest.api_url,
            b.ingest.token,
            b.ingest.pool,
            b.ingest.org,
            f"brokerloss-{uuid.uuid4().hex[:6]}",
        ).open()
        hooks = [
            await b.api.create_webhook(ingest.org, ingest.repo, f"{b.receiver_url}/bl/{i}")
            for i in range(b.plan.hooks)
        ]
        if not await _fanned_out(b, ingest, len(hooks)):
            b.broken.append("brokerloss: no probe event reached every webhook on the cluster")
            return
        b.results["brokerloss"] = await _through_faults(b, kc, ingest, len(hooks))
    finally:
        if ingest is not None:
            await ingest.close()
        await asyncio.to_thread(moved.stop)
        await asyncio.to_thread(kc.stop)


async def _fanned_out(b: Bench, ingest: Ingest, hooks: int) -> bool:
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline:
        n += 1
        await ingest.http_one(f"blprobe{n}")
        until = time.monotonic() + 4
        while time.monotonic() < until:
            b.log.poll()
            if b.log.phase(f"blprobe{n}").unique >= hooks:
                return True
            await asyncio.sleep(0.1)
    return False


async def _through_faults(b: Bench, kc: KafkaCluster, ingest: Ingest, hooks: int) -> dict[str, Any]:
    rate = b.plan.latency_rate  # events/s; x hooks = deliveries/s offered
    windows: list[tuple[str, float, float]] = []
    faults: list[str] = []

    async def window(name: str, action: Callable[[], Awaitable[object]] | None = None) -> None:
        """Offers `rate` for WINDOW_S, or for as long as `action` takes if longer."""
        start = time.time()
        acting = asyncio.ensure_future(action() if action is not None else asyncio.sleep(0))
        while not acting.done() or time.time() - start < WINDOW_S:
            await paced(ingest, name, rate, 1.0)
        await acting
        windows.append((name, start, time.time()))
        b.mark(f"brokerloss {name}", start, time.time())

    async def kill(node: int, why: str) -> None:
        leaders = await kc.leaders(*HOT)
        faults.append(f"kill -9 node {node}, {why}, leading {leaders[node]} partitions")
        await asyncio.to_thread(kc.kill9, node)

    async def restart(node: int) -> None:
        await asyncio.to_thread(kc.restart, node)
        faults.append(f"node {node} restarted; replicas in sync after {await _until_in_sync(kc)}s")

    await window("steady")
    controller = kc.active_controller()
    leaders = await kc.leaders(*HOT)
    victim = next((n for n, _ in leaders.most_common() if n != controller), controller)
    await window("broker-down", lambda: kill(victim, "a broker"))
    await window("broker-back", lambda: restart(victim))
    controller = kc.active_controller()
    await window("controller-down", lambda: kill(controller, "the active controller"))
    faults.append(f"new active controller: node {kc.active_controller()}")
    await window("controller-back", lambda: restart(controller))
    gone = (await kc.leaders(*HOT)).most_common(1)[0][0]
    await window("two-brokers", lambda: kill(gone, "for good"))
    figures = []
    for name, t0, t1 in windows:
        log, expected = b.log.phase(name), ingest.of(name).accepted * hooks
        drained_s = await b.drain(name, expected)
        arrivals = sum(b.log.phase(n).count_between(t0, t1) for n, _, _ in windows)
        missing = max(0, expected - log.unique)
        lat = log.latency(missing=missing, missing_at_least_ms=(time.time() - t0) * 1000)
        figures.append(
            {
                "window": name,
                "seconds": round(t1 - t0, 1),
                "offered_deliveries_per_s": round(expected / (t1 - t0), 1),
                "delivered_per_s_in_window": round(arrivals / (t1 - t0), 1),
                "expected": expected,
                "delivered": log.unique,
                "missing": missing,
                "duplicates": log.duplicates,
                "ingest_errors": ingest.of(name).http_errors + ingest.of(name).outbox_errors,
                "p50_ms": lat.get("p50_ms"),
                "p99_ms": lat.get("p99_ms"),
                "max_ms": lat.get("max_ms"),
                "drained_s": drained_s,
            }
        )
        say(
            f"brokerloss {name}: {fmt(arrivals / (t1 - t0))} deliveries/s in the window, "
            f"p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms, not yet arrived {missing}, "
            f"twice {log.duplicates}"
        )
    await _late(b, figures)
    for f in faults:
        say(f"brokerloss: {f}")
    return {"offered_events_per_s": rate, "hooks": hooks, "faults": faults, "windows": figures}


async def _late(b: Bench, figures: list[dict[str, Any]]) -> None:
    """Waits up to LATE_WAIT_S for what each window's drain did not see, then counts it
    `late` (delivered after its drain, such as from a delay tier) or `missing` (never);
    only what is missing then breaks the run."""
    deadline = time.monotonic() + LATE_WAIT_S
    while any(f["missing"] for f in figures) and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        b.log.poll()
        for f in figures:
            if f["missing"]:
                delivered = b.log.phase(f["window"]).unique
                f["late"] = f.get("late", 0) + delivered - f["delivered"]
                f["delivered"], f["missing"] = delivered, max(0, f["expected"] - delivered)
    for f in figures:
        if f.get("late"):
            say(f"brokerloss {f['window']}: {f['late']} deliveries arrived late (after its drain)")
        if f["missing"]:
            b.broken.append(
                f"brokerloss {f['window']}: {f['missing']} of {f['expected']} deliveries missing"
                f" {LATE_WAIT_S:g} s after the last window"
            )
