"""The bench's ingest phase: the API alone taking events, one process, 32 clients.

Figures: events/s and per-request p50/p99 through `POST /repos/{org}/{repo}/events`
(floor >= 3,000/s with p99 <= 50 ms), then events/s through `POST /events/batch` in
batches of 500 (floor >= 20,000/s). Each accepted event is durable (committed to the
outbox) and idempotent as usual. The events go to a repo with no webhooks, so the
pipeline behind the API relays and matches them but delivers nothing: the figure is the
API's, with the relay and matcher running beside it as they do in production.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
import orjson

from tests.bench.load import JsonClients, push_payload
from tests.bench.phases import Bench, fmt, say

CLIENTS = 32
BATCH = 500
BATCH_CLIENTS = 4


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


class Poster(JsonClients):
    """Posts events to the API and counts what was accepted, with each request's time."""

    def __init__(self, base: str, token: str, org: str, repo: str) -> None:
        super().__init__({"Authorization": f"Bearer {token}"}, CLIENTS)
        self.base = base.rstrip("/") + "/api/v1"
        self.org, self.repo = org, repo
        self.seq = 0
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.took_ms: list[float] = []

    def _refused(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    async def one(self, phase: str, counted: bool) -> None:
        assert self.session is not None
        self.seq += 1
        body = orjson.dumps({"event": "push", "payload": push_payload(phase, self.seq)})
        began = time.perf_counter()
        try:
            async with self.session.post(
                f"{self.base}/repos/{self.org}/{self.repo}/events", data=body
            ) as r:
                await r.read()
                ok = r.status == 202
        except (aiohttp.ClientError, OSError) as exc:
            self._refused(type(exc).__name__)
            await asyncio.sleep(0.05)
            return
        if not ok:
            self._refused(str(r.status))
            await asyncio.sleep(0.05)
            return
        if counted:
            self.accepted += 1
            self.took_ms.append((time.perf_counter() - began) * 1000)

    async def batch(self, phase: str, counted: bool) -> None:
        assert self.session is not None
        events: list[dict[str, Any]] = []
        for _ in range(BATCH):
            self.seq += 1
            events.append(
                {
                    "org": self.org,
                    "repo": self.repo,
                    "event": "push",
                    "payload": push_payload(phase, self.seq),
                }
            )
        try:
            async with self.session.post(
                f"{self.base}/events/batch", data=orjson.dumps({"events": events})
            ) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError) as exc:
            self._refused(type(exc).__name__)
            await asyncio.sleep(0.05)
            return
        if status != 200:
            self._refused(str(status))
            await asyncio.sleep(0.05)
            return
        results = orjson.loads(raw)["results"]
        ok = sum(1 for x in results if x["status"] == 202)
        if ok < len(results):
            self._refused("in batch")
        if counted:
            self.accepted += ok

    async def run(
        self, phase: str, clients: int, warmup: float, duration: float, batch: bool
    ) -> float:
        """`clients` callers back to back; counts only what is accepted after `warmup`."""
        start = time.monotonic()
        counted_from, deadline = start + warmup, start + warmup + duration

        async def client() -> None:
            while (now := time.monotonic()) < deadline:
                counted = now >= counted_from
                await (self.batch(phase, counted) if batch else self.one(phase, counted))

        await asyncio.gather(*(client() for _ in range(clients)))
        return time.monotonic() - counted_from


async def ingest(b: Bench) -> None:
    b.enter("ingest")
    repo = b.ingest.repo + "-ingest"  # no webhooks: nothing to deliver
    token = b.api.headers["Authorization"].removeprefix("Bearer ")
    result: dict[str, Any] = {"clients": CLIENTS, "batch_size": BATCH}
    async with Poster(b.cluster.api_url, token, b.ingest.org, repo) as single:
        start = time.time()
        took = await single.run("ingest", CLIENTS, b.plan.paced_warmup, b.plan.ingest, False)
        b.mark("ingest", start, time.time())
        result["single"] = {
            "events_per_s": round(single.accepted / took, 1),
            "accepted": single.accepted,
            "refused": single.refused,
            "p50_ms": percentile(single.took_ms, 50),
            "p99_ms": percentile(single.took_ms, 99),
        }
    async with Poster(b.cluster.api_url, token, b.ingest.org, repo) as batched:
        start = time.time()
        took = await batched.run(
            "ingest-batch", BATCH_CLIENTS, b.plan.paced_warmup, b.plan.ingest, True
        )
        b.mark("ingest-batch", start, time.time())
        result["batch"] = {
            "events_per_s": round(batched.accepted / took, 1),
            "accepted": batched.accepted,
            "refused": batched.refused,
            "clients": BATCH_CLIENTS,
        }
    # What was accepted is still being relayed and matched: let it drain, so the next
    # phase starts on an idle pipeline.
    result["outbox_drained_s"] = await b.outbox_drained()
    b.results["ingest"] = result
    s, bt = result["single"], result["batch"]
    say(
        f"ingest: {fmt(s['events_per_s'])} events/s from {CLIENTS} clients "
        f"(p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms); batches of {BATCH}: "
        f"{fmt(bt['events_per_s'])} events/s"
    )
