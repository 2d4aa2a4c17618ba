"""Micro-benchmark of the sender's HTTP client: CPU per delivery, nothing else.

A receiver in its own process (aiohttp on uvloop, answers 200 at once) and N POSTs of a
~1 KB body with ~12 headers at concurrency 64 through `WebhookClient`, on uvloop. Reports
req/s and the client process's CPU seconds per 1,000 requests (`time.process_time()`,
which the receiver's CPU is not part of). Then how long an attempt with a 1 s timeout
against an endpoint that never answers took (the timing `test_sender` no longer asserts).

    .venv/bin/python -m tests.bench.http_client [--requests N] [--impl FILE.py] [--runs R]

`--impl` loads `WebhookClient` from another file (say, an older copy of
services/sender/http.py) to compare two clients on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from shared.core.ssrf import Allowlist

CONCURRENCY = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(status=200, body=b"ok")

    server = web.Server(handle, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", port, backlog=2048)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        srv.close()


def _load_client(impl: str | None) -> Any:
    if impl is None:
        from services.sender.http import WebhookClient

        return WebhookClient
    spec = importlib.util.spec_from_file_location("bench_impl", impl)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_impl"] = module
    spec.loader.exec_module(module)
    return module.WebhookClient


def _request(i: int) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "event": "push",
            "event_id": f"{i:032x}",
            "repository": {"full_name": "bench/repo", "private": False},
            "commits": [{"id": f"{i:040x}", "message": "m" * 120}] * 4,
        }
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Hookline/1.0",
        "X-Hookline-Event": "push",
        "X-Hookline-Delivery": f"{i:08x}-0000-4000-8000-000000000000",
        "X-Hookline-Attempt": "1",
        "X-Hub-Signature-256": "sha256=" + "a" * 64,
        "X-Hookline-Signature-256": "sha256=" + "a" * 64,
        "webhook-id": f"{i:08x}-0000-4000-8000-000000000000",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1," + "b" * 44,
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": f"{i:08x}-0000-4000-8000-000000000000",
    }
    return body, headers


async def _run(cls: Any, url: str, total: int) -> dict[str, float]:
    client = cls(Allowlist.parse("127.0.0.0/8"), concurrency=CONCURRENCY, max_request_bytes=1 << 20)
    await client.start()
    requests = [_request(i) for i in range(256)]
    failures: list[str] = []

    async def worker(count: int) -> None:
        for i in range(count):
            body, headers = requests[i % len(requests)]
            result = await client.post(url, body, headers, timeout_s=10)
            if not result.ok:
                failures.append(str(result.error))

    try:
        # Warm-up: the pool fills, every code path is imported and cached.
        await asyncio.gather(*(worker(20) for _ in range(CONCURRENCY)))
        per = total // CONCURRENCY
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(per) for _ in range(CONCURRENCY)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await client.close()
    done = per * CONCURRENCY
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[:3]}")
    return {"rps": done / wall, "cpu_ms_per_req": cpu * 1000 / done, "wall_s": wall}


async def timeout_accuracy(cls: Any, timeout_s: float = 1.0) -> float:
    """The duration_ms of one attempt against a server that accepts and never answers;
    ideally `timeout_s` (its result must be classed `timeout`)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = cls(Allowlist.parse("127.0.0.0/8"), concurrency=1, max_request_bytes=1 << 20)
    await client.start()
    try:
        result = await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=timeout_s)
    finally:
        await client.close()
        server.close()
    if result.error != "timeout":
        raise SystemExit(f"expected a timeout, got {result}")
    return float(result.duration_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--impl", help="a file defining WebhookClient (default: the sender's)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.serve:
        uvloop.run(_serve(args.serve))
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.http_client", "--serve", str(port)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        cls = _load_client(args.impl)
        name = args.impl or "services/sender/http.py"
        print(f"client {name}; load average {os.getloadavg()[0]:.2f}", flush=True)
        results = []
        for run in range(args.runs):
            r = uvloop.run(_run(cls, f"http://127.0.0.1:{port}/hook", args.requests))
            results.append(r)
            print(
                f"run {run + 1}: {r['rps']:8.0f} req/s  "
                f"{r['cpu_ms_per_req']:.3f} CPU s per 1,000 requests",
                flush=True,
            )
        best = min(results, key=lambda r: r["cpu_ms_per_req"])
        med = statistics.median(r["cpu_ms_per_req"] for r in results)
        print(
            f"best: {best['rps']:.0f} req/s, {best['cpu_ms_per_req']:.3f} CPU s/1k; "
            f"median {med:.3f} CPU s/1k; load average {os.getloadavg()[0]:.2f}"
        )
        took = uvloop.run(timeout_accuracy(cls))
        print(f"a 1 s timeout took {took:.0f} ms (expected 1000 to 1100)", flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
