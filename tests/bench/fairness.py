"""The bench's fairness phase (issue 14 item 5): 1,000 webhooks over 100 repos, one hot
repo taking half the events, offered load above what the senders deliver.

Figure: each webhook's p50 event -> delivery latency over the window, and the worst
webhook's p50 against the median webhook's (floor <= 3). The deliveries are keyed by
webhook id, so which partitions and which sender the hot repo's webhooks land on is luck:
the figure holds only if the senders' scheduling, not the spread, keeps it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import asyncpg
import numpy as np

from shared.outbox import enqueue_event
from tests.bench.load import push_payload
from tests.bench.phases import Bench, fmt, say

REPOS = 100
HOOKS_PER_REPO = 10
HOT = 0  # the repo index that gets half the events
BATCH = 50
WORKERS = 4
MIN_SAMPLES = 3  # a webhook's p50 needs at least this many deliveries in the window
CREATE_CONCURRENCY = 16


def repo_name(b: Bench, index: int) -> str:
    return f"{b.ingest.repo}-fair{index:03d}"


def repo_of(seq: int) -> int:
    """Every other event goes to the hot repo; the rest go round the 99 others."""
    return HOT if seq % 2 == 0 else 1 + (seq // 2) % (REPOS - 1)


class Offer:
    """Writes push events to the 100 repos through the outbox, half to the hot one."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.seq = itertools.count()
        self.accepted: dict[str, int] = {}
        self.errors = 0
        self.last_error = ""

    async def batch(
        self, pool: asyncpg.Pool, phase: str, n: int, repos: list[int] | None = None
    ) -> None:
        """`n` events in one transaction, to `repos` in turn if given, else half to the
        hot repo."""
        try:
            async with pool.acquire() as conn, conn.transaction():
                for k in range(n):
                    seq = next(self.seq)
                    repo = repo_of(seq) if repos is None else repos[k % len(repos)]
                    await enqueue_event(
                        conn,
                        org=self.b.ingest.org,
                        repo=repo_name(self.b, repo),
                        event="push",
                        payload=push_payload(phase, seq),
                    )
        except (asyncpg.PostgresError, OSError) as exc:
            self.errors += 1
            self.last_error = repr(exc)
            await asyncio.sleep(0.05)
            return
        self.accepted[phase] = self.accepted.get(phase, 0) + n

    def backlog(self, phase: str) -> float:
        """Deliveries owed and not yet received (every event fans out to 10 webhooks)."""
        return self.accepted.get(phase, 0) * HOOKS_PER_REPO - self.b.log.phase(phase).unique

    async def saturate(self, phase: str, duration: float) -> None:
        """Offers events as fast as the outbox takes them while fewer than the bench's
        backlog cap (seconds of the delivery rate) wait undelivered: above capacity, with
        a bounded drain."""
        b, pool = self.b, self.b.ingest.pool
        deadline = time.monotonic() + duration

        def cap() -> float:
            rate = b.log.rate(time.time())
            return max(b.plan.backlog_min * HOOKS_PER_REPO, rate * b.plan.backlog_seconds)

        async def worker() -> None:
            while time.monotonic() < deadline:
                if self.backlog(phase) >= cap():
                    await asyncio.sleep(0.02)
                    continue
                await self.batch(pool, phase, BATCH)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))


async def create_hooks(b: Bench) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(repo: int, i: int) -> dict[str, Any]:
        async with gate:
            return await b.api.create_webhook(
                b.ingest.org,
                repo_name(b, repo),
                f"{b.receiver_url}/hook/fair/{repo}/{i}",
                description=f"bench fairness {repo}/{i}",
            )

    return list(
        await asyncio.gather(*(one(r, i) for r in range(REPOS) for i in range(HOOKS_PER_REPO)))
    )


def p50s(b: Bench, phase: str, t0: float, t1: float) -> dict[str, tuple[float, int]]:
    """Each webhook path's p50 (ms) and count, of the deliveries arriving in [t0, t1)."""
    log = b.log.phase(phase)
    arrivals = np.asarray(log.arrivals)
    lat = np.asarray(log.latencies_ms)
    paths = np.asarray(log.path_of)
    keep = (arrivals >= t0) & (arrivals < t1) & (lat > 0)
    out: dict[str, tuple[float, int]] = {}
    for path in np.unique(paths[keep]):
        mine = lat[keep & (paths == path)]
        out[str(path)] = (round(float(np.percentile(mine, 50)), 1), int(mine.size))
    return out


def summary(by_hook: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """The worst webhook's p50 against the median webhook's, over webhooks with enough
    deliveries to have one."""
    counted = {p: v for p, (v, n) in by_hook.items() if n >= MIN_SAMPLES}
    if not counted:
        return {"hooks_measured": 0}
    values = np.asarray(list(counted.values()))
    median = float(np.median(values))
    worst = max(counted, key=lambda p: counted[p])
    hot = {p: v for p, v in counted.items() if p.startswith(f"/hook/fair/{HOT}/")}
    cold = [v for p, v in counted.items() if p not in hot]
    return {
        "hooks_measured": len(counted),
        "hooks_too_few_deliveries": len(by_hook) - len(counted),
        "median_p50_ms": round(median, 1),
        "max_p50_ms": round(float(values.max()), 1),
        "min_p50_ms": round(float(values.min()), 1),
        "ratio": round(float(values.max()) / median, 3) if median > 0 else None,
        "worst_hook": worst,
        "hot_p50_ms": dict(sorted(hot.items())),
        "cold_p50_ms_quartiles": [round(float(q), 1) for q in np.percentile(cold, [25, 50, 75])]
        if cold
        else None,
    }


async def fairness(b: Bench) -> None:
    b.enter("fairness")
    t_setup = time.time()
    hooks = await create_hooks(b)
    offer = Offer(b)
    # One event per repo until every webhook answered once: the matcher and the senders
    # know all 1,000 (and hold connections) before the window opens.
    probe_deadline = time.monotonic() + 90
    while time.monotonic() < probe_deadline:
        await offer.batch(b.ingest.pool, "fairness-probe", REPOS, list(range(REPOS)))
        until = time.monotonic() + 10
        while time.monotonic() < until:
            b.log.poll()
            if len(b.log.phase("fairness-probe").paths) >= len(hooks):
                break
            await asyncio.sleep(0.2)
        if len(b.log.phase("fairness-probe").paths) >= len(hooks):
            break
    reached = len(b.log.phase("fairness-probe").paths)
    if reached < len(hooks):
        b.broken.append(f"fairness: probes reached {reached} of {len(hooks)} webhooks")
    b.mark("fairness-setup", t_setup, time.time())
    warmup, duration = b.plan.fairness_warmup, b.plan.fairness
    start = time.time()
    await offer.saturate("fairness", warmup + duration)
    end = time.time()
    b.log.poll()
    backlog_end = offer.backlog("fairness")
    drained = await b.drain("fairness", offer.accepted.get("fairness", 0) * HOOKS_PER_REPO)
    b.mark("fairness", start, time.time())
    log = b.log.phase("fairness")
    expected = offer.accepted.get("fairness", 0) * HOOKS_PER_REPO
    by_hook = p50s(b, "fairness", start + warmup, end)
    figures = summary(by_hook)
    b.results["fairness"] = {
        "webhooks": len(hooks),
        "repos": REPOS,
        "hot_repo_share": 0.5,
        "setup_s": round(start - t_setup, 1),
        "window_s": duration,
        "warmup_s": warmup,
        "offered_events_per_s": round(offer.accepted.get("fairness", 0) / (end - start), 1),
        "deliveries_per_s": round(log.count_between(start + warmup, end) / duration, 1),
        "backlog_at_end_deliveries": round(backlog_end, 1),
        "drain_s": drained,
        "expected": expected,
        "delivered": log.unique,
        "missing": max(0, expected - log.unique),
        "duplicates": log.duplicates,
        "outbox_errors": offer.errors,
        "last_error": offer.last_error or None,
        **figures,
        "latency_under_saturation": log.latency(start + warmup, end),
        "p50_ms_by_hook": {p: v for p, (v, _) in sorted(by_hook.items())},
    }
    if expected and log.unique == 0:
        b.broken.append(f"fairness: nothing delivered of {expected}")
    say(
        f"fairness: {fmt(b.results['fairness']['deliveries_per_s'])} deliveries/s, "
        f"p50 per webhook median {figures.get('median_p50_ms')} ms, worst "
        f"{figures.get('max_p50_ms')} ms ({figures.get('worst_hook')}): ratio "
        f"{figures.get('ratio')} over {figures.get('hooks_measured')} webhooks "
        f"(delivered {fmt(log.unique)}/{fmt(expected)}, drained in {drained}s)"
    )
