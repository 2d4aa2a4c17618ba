"""The bench's inbound phase: calls to one `services.inbound` process from 32 clients.

Figures: accepted calls/s at saturation (floor >= 2,000 on this 2-core machine), then
call -> delivery p50/p99 at a fixed rate, each call becoming an `agent.action` event that
one outbound webhook (on the receiver) is subscribed to.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from tests.bench.load import JsonClients
from tests.bench.phases import Bench, fmt, say

CLIENTS = 32
PADDING = "x" * 400  # a call of about 0.6 KB, like a CI system's notification


def _body(phase: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "message": f"bench call {seq}: pipeline failed on main",
            "sent_at": time.time(),
            "phase": phase,
            "seq": seq,
            "data": {"pipeline": seq, "ref": "refs/heads/main", "log": PADDING},
        }
    )


class Caller(JsonClients):
    """Posts calls to one inbound URL and counts the answers."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__({"X-Webhook-Secret": secret}, CLIENTS)
        self.url = url
        self.seq = 0
        self.accepted: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.last_error = ""

    async def one(self, phase: str) -> float | None:
        """One call; its accept time, or None if it was not accepted."""
        assert self.session is not None
        self.seq += 1
        try:
            async with self.session.post(self.url, data=_body(phase, self.seq)) as r:
                await r.read()
                if r.status == 202:
                    self.accepted[phase] = self.accepted.get(phase, 0) + 1
                    return time.time()
                self.last_error = f"answered {r.status}"
        except (aiohttp.ClientError, OSError) as exc:
            self.last_error = repr(exc)
        self.refused[phase] = self.refused.get(phase, 0) + 1
        await asyncio.sleep(0.05)
        return None

    async def saturate(self, phase: str, warmup: float, duration: float) -> list[float]:
        """`CLIENTS` callers back to back; returns the accept times."""
        deadline = time.monotonic() + warmup + duration
        times: list[float] = []

        async def client() -> None:
            while time.monotonic() < deadline:
                at = await self.one(phase)
                if at is not None:
                    times.append(at)

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return times

    async def paced(self, phase: str, rate: float, duration: float, tick: float = 0.05) -> None:
        start, owed, n = time.monotonic(), 0.0, 0
        tasks: set[asyncio.Task[Any]] = set()
        while time.monotonic() < start + duration:
            owed += rate * tick
            count, owed = int(owed), owed - int(owed)
            for _ in range(count):
                task = asyncio.create_task(self.one(phase))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)


async def inbound(b: Bench) -> None:
    b.enter("inbound")
    url_base = b.cluster.inbound_url
    await b.api.create_webhook(
        b.ingest.org,
        b.ingest.repo,
        f"{b.receiver_url}/hook/inbound",
        events=["agent.action"],
        description="bench: inbound calls",
    )
    status, hook = await b.api.call(
        "POST", f"/repos/{b.ingest.org}/{b.ingest.repo}/inbound-webhooks", {"name": "bench"}
    )
    if status != 201:
        b.broken.append(f"inbound: creating the inbound webhook answered {status}: {hook}")
        return
    url = url_base + "/hooks/in/" + hook["id"]
    warmup, duration = b.plan.paced_warmup, b.plan.inbound
    async with Caller(url, hook["secret"]) as caller:
        start = time.time()
        times = await caller.saturate("inbound", warmup, duration)
        end = time.time()
        counted = [t for t in times if t >= start + warmup]
        rate = len(counted) / max(end - (start + warmup), 0.001)
        accepted = caller.accepted.get("inbound", 0)
        drained = await b.drain("inbound", accepted)
        b.mark("inbound", start, time.time())
        saturated = b.log.phase("inbound")
        say(
            f"inbound: {fmt(rate)} accepted calls/s from {CLIENTS} clients "
            f"({fmt(accepted)} accepted, {caller.refused.get('inbound', 0)} not; "
            f"delivered {fmt(saturated.unique)}, drained in {drained}s)"
        )
        await caller.paced("inbound-latency-warmup", b.plan.inbound_rate, warmup)
        lat_start = time.time()
        await caller.paced("inbound-latency", b.plan.inbound_rate, b.plan.inbound_latency)
        lat_end = time.time()
        expected = caller.accepted.get("inbound-latency", 0)
        lat_drained = await b.drain("inbound-latency", expected)
        b.mark("inbound-latency", lat_start, time.time())
    log = b.log.phase("inbound-latency")
    missing = max(0, expected - log.unique)
    latency = log.latency(missing=missing, missing_at_least_ms=(time.time() - lat_end) * 1000)
    b.results["inbound"] = {
        "clients": CLIENTS,
        "accepted_calls_per_s": round(rate, 1),
        "window_s": duration,
        "warmup_s": warmup,
        "accepted": accepted,
        "not_accepted": caller.refused.get("inbound", 0),
        "last_error": caller.last_error or None,
        "delivered": saturated.unique,
        "missing": max(0, accepted - saturated.unique),
        "duplicates": saturated.duplicates,
        "drain_s": drained,
        "latency_under_saturation": saturated.latency(start + warmup, end),
        "paced_calls_per_s": b.plan.inbound_rate,
        "paced": {
            "duration_s": b.plan.inbound_latency,
            "accepted": expected,
            "delivered": log.unique,
            "drain_s": lat_drained,
            **latency,
        },
    }
    if accepted and saturated.unique == 0:
        b.broken.append("inbound: no accepted call was delivered")
    say(
        f"inbound: call -> delivery p50 {latency.get('p50_ms', '-')} ms, "
        f"p99 {latency.get('p99_ms', '-')} ms at {fmt(b.plan.inbound_rate)} calls/s "
        f"(delivered {fmt(log.unique)}/{fmt(expected)})"
    )
