"""What an orchestrator relies on: every worker answers /healthz and /readyz on
HOOKLINE_METRICS_PORT, and SIGTERM drains it to a clean exit within the grace."""

from __future__ import annotations

import time

import aiohttp
import pytest

from shared.config import Settings
from tests.e2e.conftest import free_port
from tests.e2e.harness import ServiceProcess, eventually, logs_of

pytestmark = pytest.mark.e2e


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


@pytest.mark.parametrize("worker", ["relay", "matcher", "sender"])
async def test_a_worker_serves_its_probes_and_drains_on_sigterm(
    provisioned: Settings, service_env: dict[str, str], worker: str
) -> None:
    port = free_port()
    proc = ServiceProcess(
        worker,
        {**service_env, "HOOKLINE_METRICS_PORT": str(port), "HOOKLINE_SHUTDOWN_GRACE_S": "20"},
        instance=f"e2e-probe-{worker}",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert (
            await eventually(lambda: _status(base + "/healthz"), timeout=30, what="/healthz") == 200
        ), logs_of([proc])

        async def ready() -> bool:
            return await _status(base + "/readyz") == 200

        await eventually(ready, timeout=30, what="/readyz answering 200")
        started = time.monotonic()
        assert proc.stop(timeout=30) == 0, logs_of([proc])
        assert time.monotonic() - started < 20
        assert await _status(base + "/healthz") == 0  # the probe server went with it
    finally:
        proc.stop()
