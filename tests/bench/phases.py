"""The bench's phases; each records its figures in `bench.results[<phase>]` and prints them."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.kafka import DELIVERIES, CachedPartitioner, topic_specs
from tests.bench.cluster import Cluster
from tests.bench.load import Api, Ingest, paced, saturate
from tests.bench.observe import ReceiverLog
from tests.infra import ROOT

ORDER = (
    "setup",
    "idle",
    "timeouts",
    "ceiling",
    "sustained",
    "sustained_http",
    "latency",
    "isolation",
    "fairness",
    "inbound",
    "ingest",
    "scale",
    "config_scale",
    "brokerloss",
)


@dataclass(frozen=True)
class Plan:
    """Durations in seconds; the default run stays under 8 minutes."""

    hooks: int = 10
    senders: int = 2
    idle_settle: float = 5  # after setup's probes, before the idle measurement
    idle: float = 20
    ingest: float = 10  # each of: single events from 32 clients; batches of 500
    sustained_http: float = 30  # saturated again, every event through HTTP ingest
    sender_concurrency: int = 256
    warmup: float = 10
    sustained: float = 60
    latency_rate: float = 100  # events/s: x hooks = deliveries/s
    latency: float = 30
    isolation: float = 30
    # 1,000 webhooks, one hot repo with half the events, saturated: per-webhook p50s
    fairness_warmup: float = 5
    fairness: float = 30
    # Paced phases first offer their rate this long, tagged apart and not counted: the
    # figures are the steady state, not the step from idle (new connections, cold caches).
    paced_warmup: float = 3
    slow_timeout_s: int = 10
    ceiling: float = 15
    scale_warmup: float = 5
    scale: float = 30
    inbound: float = 15  # calls to one inbound process from 32 clients, relays paused
    inbound_live: float = 10  # the same with the pipeline delivering beside it
    inbound_rate: float = 500  # then this many calls/s for call -> delivery latency
    inbound_latency: float = 10
    # While saturating, offer no more than this many seconds of the current delivery rate
    # beyond what was delivered (at least backlog_min events): enough to keep every stage
    # busy, short enough that draining afterwards takes seconds.
    backlog_seconds: float = 5.0
    backlog_min: int = 300
    drain_timeout: float = 60
    stall_timeout: float = 15


QUICK = Plan(
    idle_settle=2,
    idle=5,
    ingest=4,
    sustained_http=8,
    warmup=3,
    sustained=10,
    latency=8,
    isolation=8,
    fairness_warmup=2,
    fairness=8,
    paced_warmup=1,
    ceiling=5,
    scale_warmup=3,
    scale=8,
    inbound=5,
    inbound_live=4,
    inbound_latency=5,
    drain_timeout=30,
    stall_timeout=10,
)


@dataclass
class Bench:
    plan: Plan
    cluster: Cluster
    api: Api
    ingest: Ingest
    log: ReceiverLog
    receiver_url: str
    hang_port: int
    t0: float
    current: str = "start"
    phase_started: float = 0.0
    hooks: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    extra_pids: dict[str, int] = field(default_factory=dict)  # sampled while they live

    def enter(self, phase: str) -> None:
        self.current, self.phase_started = phase, time.time()
        say(f"-- {phase}")

    def mark(self, label: str, start: float, end: float) -> None:
        self.spans.append((label, round(start - self.t0, 2), round(end - self.t0, 2)))

    def expected(self, phase: str) -> int:
        return self.ingest.of(phase).accepted * len(self.hooks)

    def backlog(self, phase: str) -> float:
        """Events accepted but not yet fully delivered, in events (the log is followed by a
        task of the runner, so this is at most a fraction of a second stale)."""
        return self.ingest.of(phase).accepted - self.log.phase(phase).unique / len(self.hooks)

    def backlog_cap(self) -> float:
        rate = self.log.rate(time.time())
        return max(float(self.plan.backlog_min), rate * self.plan.backlog_seconds / len(self.hooks))

    async def drain(self, phase: str, expected: int | None = None) -> float:
        """Waits until every expected delivery of `phase` arrived or progress stalls."""
        target = self.expected(phase) if expected is None else expected
        start = time.monotonic()
        last, last_change = -1, start
        while time.monotonic() - start < self.plan.drain_timeout:
            self.log.poll()
            got = self.log.phase(phase).unique
            if got >= target:
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > self.plan.stall_timeout:
                break
            await asyncio.sleep(0.2)
        return round(time.monotonic() - start, 2)

    async def outbox_drained(self) -> float:
        """Waits (up to `drain_timeout`) until the relays have published every outbox row;
        returns how long that took."""
        start = time.monotonic()
        while time.monotonic() - start < self.plan.drain_timeout:
            left = await self.ingest.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            if not left:
                break
            await asyncio.sleep(0.2)
        return round(time.monotonic() - start, 1)

    def accounting(self, phase: str) -> dict[str, Any]:
        counts, log = self.ingest.of(phase), self.log.phase(phase)
        expected = self.expected(phase)
        result: dict[str, Any] = {
            "events_http": counts.http,
            "events_outbox": counts.outbox,
            "ingest_errors": counts.http_errors + counts.outbox_errors,
            "expected": expected,
            "delivered": log.unique,
            "missing": max(0, expected - log.unique),
            "duplicates": log.duplicates,
        }
        if counts.last_error:
            result["last_ingest_error"] = counts.last_error
        if expected and log.unique == 0:
            self.broken.append(f"{phase}: nothing delivered of {expected}")
        return result


def say(text: str) -> None:
    sys.stdout.write(f"[bench] {text}\n")
    sys.stdout.flush()


def fmt(n: float) -> str:
    return f"{n:,.0f}"


# The bench's org offers far more than the default per-org rates (a minute's worth of
# ingest at the ceiling); the services' own settings stay make up's.
BENCH_LIMITS = {
    "ingest_rate_per_min": 100_000_000,
    "inbound_rate_per_hook": 100_000_000,
    "inbound_rate_per_org": 100_000_000,
    # the fairness phase's 100 repos of 10 webhooks each, beside setup's own
    "max_webhooks_per_repo": 1_000,
    "max_org_webhooks": 10_000,
}


def machine_loop_ns(iterations: int = 1_000_000, runs: int = 3) -> float:
    """This machine's speed at plain Python: ns per iteration of a fixed loop, the best of
    `runs`. The VM's speed varies from day to day (the bare POST ceiling, which no
    Hookline code touches, measured ~3,700 req/s one day and ~2,100-2,500 the next), so a
    run is compared with another against this figure too."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best / iterations * 1e9, 1)


async def setup(b: Bench) -> None:
    """10 webhooks on one repo, then probe events until one fans out to all of them."""
    b.enter("setup")
    loop_ns = machine_loop_ns()
    status, body = await b.api.call("PUT", f"/orgs/{b.ingest.org}/limits", BENCH_LIMITS)
    if status != 200:
        b.broken.append(f"setup: raising the org's limits answered {status}: {body}")
    for i in range(b.plan.hooks):
        b.hooks.append(
            await b.api.create_webhook(
                b.ingest.org,
                b.ingest.repo,
                f"{b.receiver_url}/hook/{i}",
                description=f"bench hook {i}",
            )
        )
    start = time.time()
    deadline = time.monotonic() + 90
    probe = 0
    while time.monotonic() < deadline:
        probe += 1
        name = f"probe{probe}"
        await b.ingest.http_one(name)
        until = time.monotonic() + 4
        while time.monotonic() < until and b.log.phase(name).unique < len(b.hooks):
            b.log.poll()
            await asyncio.sleep(0.1)
        if b.log.phase(name).unique >= len(b.hooks):
            break
    else:
        b.broken.append("setup: no probe event reached all webhooks within 90 s")
    ready = time.time() - start
    b.mark("setup", start, time.time())
    partitions = hook_partitions([h["id"] for h in b.hooks])
    # With no load known yet, the sender group deals sorted partitions out in turn; once it
    # falls behind with the load uneven, it deals them again by load (bench "rebalances").
    per_sender = [
        sum(1 for p in partitions if p % b.plan.senders == i) for i in range(b.plan.senders)
    ]
    b.results["setup"] = {
        "webhooks": len(b.hooks),
        "probes": probe,
        "ready_s": round(ready, 2),
        "deliveries_partition_of_hook": partitions,
        "hooks_per_sender": per_sender,
        "machine_loop_ns": loop_ns,
    }
    say(
        f"setup: {len(b.hooks)} webhooks, full fan-out after {probe} probe(s), {ready:.1f}s; "
        f"keyed by webhook id they land on partitions {partitions}, "
        f"{' / '.join(map(str, per_sender))} hooks per sender as first dealt"
    )


def hook_partitions(webhook_ids: list[str]) -> list[int]:
    """The `hookline.deliveries` partition of each webhook (the producers' partitioner)."""
    count = next(t.partitions for t in topic_specs() if t.name == DELIVERIES)
    every = list(range(count))
    partitioner = CachedPartitioner()
    return [partitioner(wid.encode(), every, every) for wid in webhook_ids]


# Attempt timeouts measured by the "timeouts" phase, in seconds.
TIMEOUTS_S = (0.5, 1.0)


async def timeouts(b: Bench) -> None:
    """How long the sender's HTTP client takes to give up on an endpoint that accepts and
    never answers, per timeout: the timing tests/integration/test_http_client.py and
    test_sender.py only bound from below."""
    from services.sender.http import WebhookClient
    from tests.bench.http_client import timeout_accuracy

    took = {str(t): round(await timeout_accuracy(WebhookClient, t), 1) for t in TIMEOUTS_S}
    b.results["timeouts"] = {"took_ms": took}
    say("timeouts: " + ", ".join(f"{t} s took {ms:.0f} ms" for t, ms in took.items()))


async def ceiling(b: Bench) -> None:
    """The receiver driven by a bare aiohttp loop from another process."""
    b.enter("ceiling")
    concurrency = b.plan.sender_concurrency * b.plan.senders
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.ceiling",
        "--url",
        f"{b.receiver_url}/ceiling",
        "--concurrency",
        str(concurrency),
        "--duration",
        str(b.plan.ceiling),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    b.extra_pids["bench-ceiling"] = proc.pid
    out, _ = await proc.communicate()
    b.extra_pids.pop("bench-ceiling", None)
    client = orjson.loads(out.splitlines()[-1]) if out.strip() else {}
    await asyncio.sleep(0.5)
    b.log.poll()
    log = b.log.phase("ceiling")
    if log.unique < 2:
        b.broken.append("ceiling: the receiver saw no requests")
        b.results["ceiling"] = {"client": client}
        return
    first, last = log.arrivals[0], log.arrivals[-1]
    t0, t1 = first + 1.0, last - 0.5
    rate = log.count_between(t0, t1) / max(t1 - t0, 0.001)
    b.mark("ceiling", first, last)
    b.results["ceiling"] = {
        "req_per_s": round(rate, 1),
        "client_req_per_s": round(
            client.get("requests", 0) / max(client.get("seconds", 1), 0.001), 1
        ),
        "concurrency": concurrency,
        "body_bytes": client.get("body_bytes"),
        "header_bytes": client.get("header_bytes"),
        "errors": client.get("errors"),
        "window_s": round(t1 - t0, 2),
    }
    say(f"ceiling: {fmt(rate)} req/s at the receiver (concurrency {concurrency})")


async def _saturated(
    b: Bench, phase: str, warmup: float, duration: float, *, http_only: bool = False
) -> dict[str, Any]:
    b.enter(phase)
    start = time.time()
    await saturate(
        b.ingest,
        phase,
        warmup + duration,
        backlog=lambda: b.backlog(phase),
        cap=lambda: b.backlog_cap(),
        **({"http_concurrency": 32, "outbox_workers": 0} if http_only else {}),
    )
    end = time.time()
    b.mark(f"{phase}-window", start + warmup, end)  # the CPU cost per delivery is read here
    b.log.poll()
    log = b.log.phase(phase)
    rate = log.count_between(start + warmup, end) / duration
    backlog_end = b.backlog(phase)
    drained = await b.drain(phase)
    b.mark(phase, start, time.time())
    result = {
        "deliveries_per_s": round(rate, 1),
        "window_s": duration,
        "warmup_s": warmup,
        "offered_events_per_s": round(b.ingest.of(phase).accepted / (end - start), 1),
        "backlog_cap": f"{b.plan.backlog_seconds}s of delivery rate, >= {b.plan.backlog_min} ev",
        "backlog_at_end_events": round(backlog_end, 1),
        "drain_s": drained,
        "latency_under_saturation": log.latency(start + warmup, end),
        # Uneven when the webhooks' partitions are unevenly spread over the senders.
        "p50_ms_by_hook": log.p50_by_path(),
        "per_hook": dict(sorted(log.paths.items())),
        **b.accounting(phase),
    }
    say(
        f"{phase}: {fmt(rate)} deliveries/s over {duration:.0f}s "
        f"(delivered {fmt(result['delivered'])}/{fmt(result['expected'])}, "
        f"{result['duplicates']} duplicates, drained in {drained}s)"
    )
    by_hook = result["p50_ms_by_hook"]
    if by_hook:
        say(
            f"{phase}: p50 per webhook from {fmt(min(by_hook.values()))} to "
            f"{fmt(max(by_hook.values()))} ms (the backlog waits in the partitions holding "
            "more webhooks, on the busier sender)"
        )
    return result


async def idle(b: Bench) -> None:
    """Nothing to deliver: what Hookline's processes, PostgreSQL and Kafka cost at rest (the
    runner adds their CPU share from the samples once the run is over)."""
    b.enter("idle")
    await asyncio.sleep(b.plan.idle_settle)
    start = time.time()
    await asyncio.sleep(b.plan.idle)
    b.mark("idle", start, time.time())
    b.results["idle"] = {"duration_s": b.plan.idle}


async def sustained(b: Bench) -> None:
    b.results["sustained"] = await _saturated(b, "sustained", b.plan.warmup, b.plan.sustained)
    b.results["sustained"]["senders"] = len(b.cluster.running("sender"))


async def sustained_http(b: Bench) -> None:
    """Saturated as `sustained`, but every event through `POST /repos/{org}/{repo}/events`
    from 32 clients, as a new user's producers send them."""
    b.results["sustained_http"] = await _saturated(
        b, "sustained_http", b.plan.warmup, b.plan.sustained_http, http_only=True
    )


async def _paced(b: Bench, phase: str, duration: float) -> dict[str, Any]:
    b.enter(phase)
    if b.plan.paced_warmup > 0:
        await paced(b.ingest, f"{phase}-warmup", b.plan.latency_rate, b.plan.paced_warmup)
    start = time.time()
    await paced(b.ingest, phase, b.plan.latency_rate, duration)
    end = time.time()
    drained = await b.drain(phase)
    gave_up = time.time()
    b.mark(phase, start, gave_up)
    log = b.log.phase(phase)
    missing = max(0, b.expected(phase) - log.unique)
    result: dict[str, Any] = {
        "offered_events_per_s": b.plan.latency_rate,
        "offered_deliveries_per_s": b.plan.latency_rate * len(b.hooks),
        "duration_s": duration,
        "warmup_s": b.plan.paced_warmup,
        "achieved_deliveries_per_s": round(log.count_between(start, end) / (end - start), 1),
        "drain_s": drained,
        **log.latency(missing=missing, missing_at_least_ms=(gave_up - end) * 1000),
        **b.accounting(phase),
    }
    say(
        f"{phase}: p50 {result.get('p50_ms', '-')} ms, p99 {result.get('p99_ms', '-')} ms at "
        f"{fmt(result['offered_deliveries_per_s'])} deliveries/s offered "
        f"(delivered {fmt(result['delivered'])}/{fmt(result['expected'])})"
    )
    return result


async def latency(b: Bench) -> None:
    b.results["latency"] = await _paced(b, "latency", b.plan.latency)


async def isolation(b: Bench) -> None:
    """The fixed load again, with one more webhook whose endpoint never answers."""
    baseline = b.results.get("latency") or await _paced(b, "isolation-baseline", b.plan.isolation)
    slow = await b.api.create_webhook(
        b.ingest.org,
        b.ingest.repo,
        f"http://127.0.0.1:{b.hang_port}/never",
        timeout_s=b.plan.slow_timeout_s,
        description="bench: never answers",
    )
    # Wait until the sender knows the new webhook: its ping opens a connection that hangs.
    await b.api.call("POST", f"/webhooks/{slow['id']}/ping")
    deadline = time.monotonic() + 15
    while b.log.hang_connections == 0 and time.monotonic() < deadline:
        b.log.poll()
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the matcher consumes the same webhook record
    try:
        result = await _paced(b, "isolation", b.plan.isolation)
    finally:
        status = await b.api.delete_webhook(slow["id"])
    # Fast deliveries still stuck behind the dead endpoint: wait for them after the delete
    # (their latency is already counted as a lower bound), so the next phase starts clean.
    if result["missing"]:
        result["drain_after_delete_s"] = await b.drain("isolation")
        result["delivered_after_delete"] = b.log.phase("isolation").unique
    base_p99 = baseline.get("p99_ms")
    with_p99 = result.get("p99_ms")
    ratio = (with_p99 / base_p99) if base_p99 and with_p99 else None
    result.update(
        baseline_p99_ms=base_p99,
        baseline_p50_ms=baseline.get("p50_ms"),
        ratio=round(ratio, 3) if ratio else None,
        slow_connections=b.log.hang_connections,
        slow_webhook_deleted=status == 204,
    )
    b.results["isolation"] = result
    say(f"isolation: fast hooks' p99 {with_p99} ms with the dead endpoint, {base_p99} ms without")


async def scale(b: Bench) -> None:
    """Sustained throughput with one sender replica fewer, against the sustained figure."""
    if "sustained" not in b.results:
        b.results["scale-2"] = await _saturated(b, "scale-2", b.plan.scale_warmup, b.plan.scale)
    before = b.results.get("sustained") or b.results["scale-2"]
    senders = b.cluster.running("sender")
    if len(senders) < 2:
        b.results["scale"] = {"skipped": f"{len(senders)} sender(s) running"}
        return
    victim = next((p for p in reversed(senders) if not p.profiled), senders[-1])
    stop_at = time.time()
    await asyncio.to_thread(b.cluster.stop_one, victim)
    stop_s = round(time.time() - stop_at, 2)
    b.mark("stop sender", stop_at, time.time())
    one = await _saturated(b, "scale-1", b.plan.scale_warmup, b.plan.scale)
    one["senders"] = len(b.cluster.running("sender"))
    two = before["deliveries_per_s"]
    b.results["scale"] = {
        "replicas": {str(one["senders"]): one["deliveries_per_s"], str(len(senders)): two},
        "speedup": round(two / one["deliveries_per_s"], 3) if one["deliveries_per_s"] else None,
        "one_replica": one,
        "stop_s": stop_s,
    }
    say(
        f"scale: {fmt(one['deliveries_per_s'])} deliveries/s with {one['senders']} sender(s), "
        f"{fmt(two)} with {len(senders)}"
    )


PHASES = {
    "setup": setup,
    "idle": idle,
    "timeouts": timeouts,
    "ceiling": ceiling,
    "sustained": sustained,
    "sustained_http": sustained_http,
    "latency": latency,
    "isolation": isolation,
    "scale": scale,
}
