"""Offered load: events through HTTP ingest and through the outbox, saturating or paced.

Every event's payload carries `sent_at` (time.time() just before it is submitted) and the
`phase` it belongs to, so the receiver can compute event→delivery latency per phase.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
import asyncpg
import orjson

from shared.outbox import OutboxWaker, enqueue_event


def push_payload(phase: str, seq: int) -> dict[str, Any]:
    """A push of realistic size (~0.8 KB once Hookline adds its fields)."""
    sha = hashlib.sha1(f"{phase}/{seq}".encode()).hexdigest()
    return {
        "sent_at": time.time(),
        "phase": phase,
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": sha,
        "pusher": {"name": "bench-bot", "email": "bench@example.com"},
        "head_commit": {
            "id": sha,
            "message": f"bench commit {seq}: keep the pipeline busy with a plausible message",
            "timestamp": "2025-01-01T00:00:00Z",
            "author": {"name": "Bench Bot", "email": "bench@example.com", "username": "bench"},
            "added": ["src/bench.py"],
            "modified": ["README.md", "src/hookline/sender.py"],
            "removed": [],
        },
        "compare": f"https://code.example.com/bench/compare/{sha[:12]}",
    }


class JsonClients:
    """One session for `limit` concurrent JSON posts (an async context manager); the
    callers of a phase build on it."""

    def __init__(self, headers: dict[str, str], limit: int = 32) -> None:
        self.headers = {**headers, "Content-Type": "application/json"}
        self.limit = limit
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0)
        self.session = aiohttp.ClientSession(connector=connector, headers=self.headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()


class Api:
    """The admin's view of Hookline's REST API."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers=self.headers) as s,
            s.request(method, self.base + path, json=body) as r,
        ):
            raw = await r.read()
            try:
                return r.status, (orjson.loads(raw) if raw else None)
            except orjson.JSONDecodeError:
                return r.status, raw.decode(errors="replace")

    async def create_webhook(self, org: str, repo: str, url: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", f"/repos/{org}/{repo}/webhooks", {"url": url, "events": ["push"], **fields}
        )
        if status != 201:
            raise RuntimeError(f"creating a webhook answered {status}: {body}")
        return body  # type: ignore[no-any-return]

    async def delete_webhook(self, webhook_id: str) -> int:
        status, _ = await self.call("DELETE", f"/webhooks/{webhook_id}")
        return status


@dataclass
class Counts:
    http: int = 0
    outbox: int = 0
    http_errors: int = 0
    outbox_errors: int = 0
    last_error: str = ""

    @property
    def accepted(self) -> int:
        return self.http + self.outbox


@dataclass
class Ingest:
    """Submits push events for one repository, through the API or straight into the outbox."""

    api_url: str
    token: str
    pool: asyncpg.Pool
    org: str
    repo: str
    session: aiohttp.ClientSession | None = None
    seq: int = 0
    counts: dict[str, Counts] = field(default_factory=dict)
    # As the README's Python producers do: wake the relays after each outbox commit.
    waker: OutboxWaker | None = None

    async def open(self, concurrency: int = 64) -> Ingest:
        self.waker = OutboxWaker(self.pool)
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        return self

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def of(self, phase: str) -> Counts:
        return self.counts.setdefault(phase, Counts())

    async def http_one(self, phase: str) -> bool:
        assert self.session is not None
        self.seq += 1
        url = f"{self.api_url}/api/v1/repos/{self.org}/{self.repo}/events"
        data = orjson.dumps({"event": "push", "payload": push_payload(phase, self.seq)})
        counts = self.of(phase)
        try:
            async with self.session.post(url, data=data) as r:
                await r.read()
                if r.status == 202:
                    counts.http += 1
                    return True
                counts.http_errors += 1
                counts.last_error = f"ingest answered {r.status}"
        except (aiohttp.ClientError, OSError) as exc:
            counts.http_errors += 1
            counts.last_error = f"ingest: {exc!r}"
        await asyncio.sleep(0.05)  # a failing API must not turn this into a busy loop
        return False

    async def outbox_batch(self, phase: str, n: int) -> int:
        """One transaction of `n` events through `shared.outbox.enqueue_event`."""
        counts = self.of(phase)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for _ in range(n):
                    self.seq += 1
                    await enqueue_event(
                        conn,
                        org=self.org,
                        repo=self.repo,
                        event="push",
                        payload=push_payload(phase, self.seq),
                    )
        except (asyncpg.PostgresError, OSError) as exc:
            counts.outbox_errors += 1
            counts.last_error = f"outbox: {exc!r}"
            await asyncio.sleep(0.05)
            return 0
        if self.waker is not None:
            self.waker.poke()
        counts.outbox += n
        return n


async def saturate(
    ingest: Ingest,
    phase: str,
    duration: float,
    *,
    backlog: Callable[[], float],
    cap: Callable[[], float],
    http_concurrency: int = 16,
    outbox_workers: int = 2,
    batch: int = 50,
) -> None:
    """Offers events as fast as both paths take them, about half each, while fewer than
    `cap()` events wait undelivered (so that draining afterwards stays short)."""
    deadline = time.monotonic() + duration
    counts = ingest.of(phase)

    async def http_worker() -> None:
        while time.monotonic() < deadline:
            if backlog() >= cap():
                await asyncio.sleep(0.02)
                continue
            await ingest.http_one(phase)

    async def outbox_worker() -> None:
        while time.monotonic() < deadline:
            # Keep the split near half and half; a failing API must not stop the outbox.
            ahead = counts.outbox - counts.http > batch and counts.http_errors < 100
            if ahead or backlog() >= cap():
                await asyncio.sleep(0.01)
                continue
            await ingest.outbox_batch(phase, batch)

    await asyncio.gather(
        *(http_worker() for _ in range(http_concurrency)),
        *(outbox_worker() for _ in range(outbox_workers)),
    )


async def paced(
    ingest: Ingest, phase: str, rate: float, duration: float, tick: float = 0.05
) -> None:
    """Offers `rate` events/s for `duration` seconds, half over HTTP and half through the
    outbox, on a fixed schedule (a late tick catches up; it never skips events)."""
    start = time.monotonic()
    owed = 0.0
    n_tick = 0
    tasks: set[asyncio.Task[Any]] = set()
    gate = asyncio.Semaphore(256)

    async def one_http() -> None:
        async with gate:
            await ingest.http_one(phase)

    async def outbox(n: int) -> None:
        async with gate:
            await ingest.outbox_batch(phase, n)

    while time.monotonic() < start + duration:
        owed += rate * tick
        count = int(owed)
        owed -= count
        via_http = count // 2 + (count % 2 if n_tick % 2 else 0)
        for _ in range(via_http):
            task = asyncio.create_task(one_http())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if count - via_http:
            task = asyncio.create_task(outbox(count - via_http))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n_tick += 1
        await asyncio.sleep(max(0.0, start + n_tick * tick - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
