"""Phase `config_scale` (issue 14 item 6): 10,000 webhooks, then the matcher and one sender
restarted to load them, and one event fanned out to 5,000 org-level webhooks.

The webhooks are made through the REST API, as a user makes them (the store writes each
row and its `hookline.webhooks` record through the outbox, the relay publishes it), in an
org of their own: 5,000 org-level webhooks on `fan/{i}`, 5,000 repo-level ones spread over
REPOS repositories on `cfg/{i}`. The org's `max_org_webhooks` and `max_webhooks_per_repo`
are raised with `PUT /orgs/{org}/limits` (both within `shared.limits.RANGES`); the
defaults stay as they are.

Figures: the table's load time in the restarted matcher and sender (the `load_s` of their
"webhook table loaded" line, and from process start to that line), their RSS (peak while
the phase ran, sampled from /proc every 0.5 s) and every other sender's, and the time from
an event's submission to the last of its 5,000 deliveries at the receiver: first right
after the restart (cold), then again (warm; the floor's figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.bench.cluster import BenchProcess
from tests.bench.load import Ingest
from tests.bench.phases import BENCH_LIMITS, Bench, fmt, say
from tests.bench.sampling import rss_kb

WEBHOOKS = 10_000
FANOUT = 5_000  # org-level webhooks, every one subscribed to the fan-out's event
REPOS = 50  # the other WEBHOOKS - FANOUT are repo-level, this many repositories
CREATE_CONCURRENCY = 16
FANOUT_TIMEOUT = 60.0
LOAD_TIMEOUT = 90.0


async def create_all(b: Bench, org: str, concurrency: int = CREATE_CONCURRENCY) -> dict[str, Any]:
    """POSTs every webhook, `concurrency` at a time; counts and the first error."""
    per_repo = (WEBHOOKS - FANOUT) // REPOS
    # Creations in one scope (the org's org-level webhooks, or one repo's) queue on that
    # scope's lock (the limit's check), so the order takes turns between scopes.
    jobs: list[tuple[str, dict[str, Any]]] = []
    repo_level = [
        (f"/repos/{org}/cfg-{i % REPOS}/webhooks", {"url": f"{b.receiver_url}/cfg/{i}"})
        for i in range(REPOS * per_repo)
    ]
    for i in range(max(FANOUT, len(repo_level))):
        if i < FANOUT:
            jobs.append((f"/orgs/{org}/webhooks", {"url": f"{b.receiver_url}/fan/{i}"}))
        if i < len(repo_level):
            jobs.append(repo_level[i])
    created, errors, first_error = 0, 0, ""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal created, errors, first_error
        while not queue.empty():
            path, body = queue.get_nowait()
            body = {**body, "events": ["push"], "description": "bench config_scale"}
            try:
                async with session.post(b.api.base + path, json=body) as r:
                    raw = await r.read()
                    if r.status == 201:
                        created += 1
                        continue
                    errors += 1
                    first_error = first_error or f"{r.status}: {raw[:200]!r}"
            except (aiohttp.ClientError, OSError) as exc:
                errors += 1
                first_error = first_error or repr(exc)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=b.api.headers, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    seconds = time.monotonic() - started
    return {
        "created": created,
        "errors": errors,
        "first_error": first_error,
        "create_s": round(seconds, 1),
        "create_per_s": round(created / seconds, 1) if seconds else None,
    }


async def outbox_drained(b: Bench, timeout: float = 120) -> float | None:
    """Seconds until the relay published every outbox row; None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = await b.ingest.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        if left == 0:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.2)
    return None


def loaded_line(proc: BenchProcess, offset: int) -> dict[str, Any] | None:
    """The "webhook table loaded" line the process wrote past `offset` in its log."""
    try:
        with open(proc.log_path, "rb") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        if b"webhook table loaded" not in line:
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            found = orjson.loads(line)
            if isinstance(found, dict) and found.get("event") == "webhook table loaded":
                return found
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def restart(b: Bench, name: str, victim: BenchProcess | None) -> dict[str, Any]:
    """Stops `victim` (if any), starts a new `name` and waits for its table to load."""
    if victim is not None:
        await asyncio.to_thread(b.cluster.stop_one, victim)
    proc = b.cluster.start(name)
    offset = _size(proc.log_path)
    spawned = time.time()
    deadline = time.monotonic() + LOAD_TIMEOUT
    line = None
    while time.monotonic() < deadline and proc.alive:
        line = loaded_line(proc, offset)
        if line is not None:
            break
        await asyncio.sleep(0.05)
    result: dict[str, Any] = {
        "instance": proc.instance,
        "stopped": victim.instance if victim is not None else None,
    }
    if line is None:
        b.broken.append(f"config_scale: {proc.instance} did not load its webhook table")
        return result
    at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()
    result.update(
        webhooks=line.get("webhooks"),
        load_s=line.get("load_s"),
        start_to_loaded_s=round(at - spawned, 2),
    )
    return result


async def fan_out(b: Bench, ingest: Ingest, phase: str) -> dict[str, Any]:
    """One event; seconds from its submission to the last of its FANOUT deliveries."""
    sent = time.time()
    if not await ingest.http_one(phase):
        return {"error": ingest.of(phase).last_error}
    deadline = time.monotonic() + FANOUT_TIMEOUT
    log = b.log.phase(phase)
    while time.monotonic() < deadline and log.unique < FANOUT:
        b.log.poll()
        log = b.log.phase(phase)
        await asyncio.sleep(0.05)
    b.mark(phase, sent, time.time())
    result: dict[str, Any] = {"delivered": log.unique, "expected": FANOUT}
    if log.unique:
        first, last = min(log.arrivals), max(log.arrivals)
        result.update(
            first_delivery_s=round(first - sent, 3),
            last_delivery_s=round(last - sent, 3),
            deliveries_per_s=round(log.unique / max(last - first, 0.001), 1),
            duplicates=log.duplicates,
        )
    if log.unique < FANOUT:
        result["missing"] = FANOUT - log.unique
        result["gave_up_after_s"] = round(time.time() - sent, 1)
    return result


async def sample_rss(b: Bench, peaks: dict[str, float], every: float = 0.5) -> None:
    """Peak RSS (MB) of every running matcher and sender while the phase runs."""
    while True:
        for p in b.cluster.processes:
            if p.name in ("matcher", "sender") and p.alive and p.pid:
                kb = rss_kb(p.pid)
                if kb is not None:
                    peaks[p.instance] = round(max(peaks.get(p.instance, 0.0), kb / 1024), 1)
        await asyncio.sleep(every)


async def config_scale(b: Bench) -> None:
    b.enter("config_scale")
    start = time.time()
    org = f"{b.ingest.org}-cfg"
    limits = {
        **BENCH_LIMITS,
        "max_org_webhooks": FANOUT,
        "max_webhooks_per_repo": (WEBHOOKS - FANOUT) // REPOS,
    }
    status, body = await b.api.call("PUT", f"/orgs/{org}/limits", limits)
    if status != 200:
        b.broken.append(f"config_scale: raising {org}'s limits answered {status}: {body}")
        return
    peaks: dict[str, float] = {}
    sampler = asyncio.create_task(sample_rss(b, peaks))
    ingest = await Ingest(b.ingest.api_url, b.ingest.token, b.ingest.pool, org, "fan").open()
    try:
        made = await create_all(b, org)
        say(
            f"config_scale: {fmt(made['created'])} webhooks created in {made['create_s']}s "
            f"({fmt(made['create_per_s'] or 0)}/s), {made['errors']} errors "
            f"{made['first_error']}".rstrip()
        )
        published = await outbox_drained(b)
        b.mark("config_scale-create", start, time.time())
        restarted_at = time.time()
        matchers = b.cluster.running("matcher")
        matcher = await restart(b, "matcher", matchers[-1] if matchers else None)
        senders = [p for p in b.cluster.running("sender") if not p.profiled]
        sender = await restart(b, "sender", senders[-1] if senders else None)
        while len(b.cluster.running("sender")) < b.plan.senders:
            b.cluster.start("sender")
        b.mark("config_scale-restart", restarted_at, time.time())
        say(
            f"config_scale: table of {matcher.get('webhooks')} loaded by the matcher in "
            f"{matcher.get('load_s')}s ({matcher.get('start_to_loaded_s')}s from its start), "
            f"by a sender in {sender.get('load_s')}s ({sender.get('start_to_loaded_s')}s)"
        )
        cold = await fan_out(b, ingest, "fanout-cold")
        warm = await fan_out(b, ingest, "fanout")
        say(
            f"config_scale: one event to {fmt(FANOUT)} org-level webhooks: last delivery after "
            f"{cold.get('last_delivery_s')}s right after the restart, "
            f"{warm.get('last_delivery_s')}s then "
            f"({fmt(warm.get('deliveries_per_s') or 0)} deliveries/s)"
        )
        if not warm.get("delivered"):
            b.broken.append("config_scale: the fan-out delivered nothing")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await ingest.close()
    b.mark("config_scale", start, time.time())
    rss = dict(sorted(peaks.items()))
    b.results["config_scale"] = {
        "webhooks": WEBHOOKS,
        "org_level": FANOUT,
        "repo_level": WEBHOOKS - FANOUT,
        "repos": REPOS,
        **made,
        "outbox_drained_s": published,
        "matcher": matcher,
        "sender": sender,
        "table_load_s": max(
            (r["load_s"] for r in (matcher, sender) if r.get("load_s") is not None), default=None
        ),
        "start_to_loaded_s": max(
            (r["start_to_loaded_s"] for r in (matcher, sender) if "start_to_loaded_s" in r),
            default=None,
        ),
        "rss_peak_mb": rss,
        "matcher_rss_mb": max((v for k, v in rss.items() if "-matcher-" in k), default=None),
        "sender_rss_mb": max((v for k, v in rss.items() if "-sender-" in k), default=None),
        "fanout_cold": cold,
        "fanout": warm,
        "ceiling_req_per_s": (b.results.get("ceiling") or {}).get("req_per_s"),
        "duration_s": round(time.time() - start, 1),
    }
    say(
        "config_scale: peak RSS "
        + ", ".join(f"{k.removeprefix('bench-')} {v:.0f} MB" for k, v in rss.items())
    )
