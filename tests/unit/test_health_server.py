"""A worker's probe server (shared.health) with nothing to reach: alive, but not ready, and
it says which dependency is missing (the orchestrator then keeps traffic and rollouts away
instead of restarting it)."""

from __future__ import annotations

import socket

import aiohttp

from shared.config import Settings
from shared.health import health_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_without_database_or_kafka_a_worker_is_alive_but_not_ready() -> None:
    port = _free_port()
    dead = _free_port()  # nothing listens there
    settings = Settings.from_env(
        {
            "HOOKLINE_METRICS_PORT": str(port),
            "HOOKLINE_DATABASE_URL": f"postgresql://hookline:x@127.0.0.1:{dead}/hookline",
            "HOOKLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        }
    )
    async with health_server(settings), aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{port}"
        async with s.get(base + "/healthz") as r:
            assert r.status == 200
        async with s.get(base + "/readyz") as r:
            assert r.status == 503
            assert await r.json() == {"status": "unavailable", "database": False, "kafka": False}
