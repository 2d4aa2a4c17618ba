"""The ceiling: the same receiver driven by a bare aiohttp POST loop, its own process.

The body and headers are those of a real delivery (same payload shape, same signature
headers), sent with the senders' concurrency budget over keep-alive connections on uvloop.

    python -m tests.bench.ceiling --url URL --concurrency N --duration S
prints `{"requests", "errors", "seconds", "body_bytes", "header_bytes"}` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from shared.core.events import build_body
from shared.core.signing import signature_headers
from tests.bench.load import push_payload

PREFIX = "X-Hookline"


def delivery_like(phase: str = "ceiling") -> tuple[bytes, dict[str, str]]:
    """A body and headers of the size and shape the senders send for a bench push."""
    event_id = str(uuid.uuid4())
    payload = {**push_payload(phase, 0), "sent_at": 0}  # one static body: no latency
    body = orjson.dumps(
        build_body(
            payload,
            full_type="push",
            event_id=event_id,
            created_at=datetime.now(UTC),
            org="bench",
            repo="ceiling",
        )
    )
    delivery_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Hookline/0.1.0",
        f"{PREFIX}-Event": "push",
        f"{PREFIX}-Delivery": delivery_id,
        f"{PREFIX}-Attempt": "1",
        **signature_headers(
            prefix=PREFIX,
            secrets=["whsec_" + "A" * 43 + "="],
            delivery_id=delivery_id,
            timestamp=int(time.time()),
            body=body,
        ),
    }
    return body, headers


async def drive(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    body, headers = delivery_like()
    counts = {"requests": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=None)
    deadline = time.monotonic() + duration

    async def worker(n: int) -> None:
        seq = 0
        own = dict(headers)
        while time.monotonic() < deadline:
            seq += 1
            own[f"{PREFIX}-Delivery"] = f"c{n}-{seq}"
            try:
                async with session.post(url, data=body, headers=own) as response:
                    await response.read()
                    counts["requests" if response.status == 200 else "errors"] += 1
            except (aiohttp.ClientError, OSError):
                counts["errors"] += 1
                await asyncio.sleep(0.01)

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    header_bytes = sum(len(k) + len(v) + 4 for k, v in headers.items())
    return {
        **counts,
        "seconds": round(time.monotonic() - started, 3),
        "concurrency": concurrency,
        "body_bytes": len(body),
        "header_bytes": header_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(drive(args.url, args.concurrency, args.duration))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
