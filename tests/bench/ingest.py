"""The bench's ingest phase: the API alone taking events, one process, 32 clients.

Figures: events/s and per-request p50/p99 through `POST /repos/{org}/{repo}/events`
(floor >= 3,000/s with p99 <= 50 ms), then events/s through `POST /events/batch` in
batches of 500 (floor >= 20,000/s). Each accepted event is durable (committed to the
outbox) and idempotent as usual. The events go to a repo with no webhooks, so the
pipeline behind the API relays and matches them but delivers nothing.

The single events come from wrk (tests/bench/wrk.py), twice: with the relays paused, so
that the figure is the API's own (what it accepts waits in the outbox, and the stages
behind take no CPU from this 2-core machine meanwhile), and with the relay and matcher
running beside it as they do in production.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from tests.bench import wrk
from tests.bench.load import JsonClients, push_payload
from tests.bench.phases import Bench, fmt, say

CLIENTS = 32
SEQ_MARK = "__seq__"
BATCH = 500
BATCH_CLIENTS = 4


class Poster(JsonClients):
    """Posts events to the API and counts what was accepted, with each request's time."""

    def __init__(self, base: str, token: str, org: str, repo: str) -> None:
        super().__init__({"Authorization": f"Bearer {token}"}, CLIENTS)
        self.base = base.rstrip("/") + "/api/v1"
        self.org, self.repo = org, repo
        self.seq = 0
        self.accepted = 0
        self.refused: dict[str, int] = {}

    def _refused(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

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

    async def run(self, phase: str, clients: int, warmup: float, duration: float) -> float:
        """`clients` callers back to back; counts only what is accepted after `warmup`."""
        start = time.monotonic()
        counted_from, deadline = start + warmup, start + warmup + duration

        async def client() -> None:
            while (now := time.monotonic()) < deadline:
                counted = now >= counted_from
                await self.batch(phase, counted)

        await asyncio.gather(*(client() for _ in range(clients)))
        return time.monotonic() - counted_from


def _template(phase: str) -> str:
    """A push event for wrk, `{seq}` numbered by it (the size of `push_payload`'s)."""
    payload = push_payload(phase, 0) | {"sent_at": 0, "seq": SEQ_MARK}
    payload["head_commit"]["message"] = f"bench commit {SEQ_MARK}: keep the pipeline busy"
    text = orjson.dumps({"event": "push", "payload": payload}).decode()
    return text.replace(f'"{SEQ_MARK}"', wrk.SEQ).replace(SEQ_MARK, wrk.SEQ)


async def ingest(b: Bench) -> None:
    b.enter("ingest")
    repo = b.ingest.repo + "-ingest"  # no webhooks: nothing to deliver
    token = b.api.headers["Authorization"].removeprefix("Bearer ")
    result: dict[str, Any] = {"clients": CLIENTS, "batch_size": BATCH}
    url = f"{b.cluster.api_url}/api/v1/repos/{b.ingest.org}/{repo}/events"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    start = time.time()
    await wrk.run(url, _template("ingest-warmup"), headers, seconds=b.plan.paced_warmup)
    # The API's own figure: the relays paused, what it accepts waits in the outbox.
    with b.cluster.paused("relay"):
        alone = await wrk.run(url, _template("ingest"), headers, seconds=b.plan.ingest)
    await b.outbox_drained()
    # The same with the relays and the matcher working beside it.
    live = await wrk.run(url, _template("ingest-live"), headers, seconds=b.plan.ingest)
    b.mark("ingest", start, time.time())
    result["driver"] = "wrk"
    result["single"] = alone.figures(202, "events_per_s") | {"relays": "paused"}
    result["single_live"] = live.figures(202, "events_per_s")
    async with Poster(b.cluster.api_url, token, b.ingest.org, repo) as batched:
        start = time.time()
        took = await batched.run("ingest-batch", BATCH_CLIENTS, b.plan.paced_warmup, b.plan.ingest)
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
    s, sl, bt = result["single"], result["single_live"], result["batch"]
    say(
        f"ingest: {fmt(s['events_per_s'])} events/s from {CLIENTS} clients with the relays "
        f"paused (p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms); {fmt(sl['events_per_s'])}/s "
        f"with them running (p99 {sl['p99_ms']} ms); batches of {BATCH}: "
        f"{fmt(bt['events_per_s'])} events/s"
    )
