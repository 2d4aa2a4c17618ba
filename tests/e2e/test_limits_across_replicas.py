"""Rate limits hold across replicas: two API processes share one org's ingest limit."""

from __future__ import annotations

import aiohttp

from shared.config import Settings
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import free_port
from tests.e2e.harness import ServiceProcess, eventually

LIMIT = 10


async def test_two_api_processes_share_the_ingest_limit(
    provisioned: Settings, service_env: dict[str, str], org: str
) -> None:
    ports = [free_port(), free_port()]
    env = {**service_env, "HOOKLINE_INGEST_RATE_PER_ORG": str(LIMIT)}
    apis = [
        ServiceProcess("api", {**env, "HOOKLINE_API_PORT": str(p)}, instance=f"e2e-api-rate-{i}")
        for i, p in enumerate(ports)
    ]
    try:
        for api in apis:
            api.start()
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
        ) as s:

            async def ready() -> bool:
                for port in ports:
                    try:
                        async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status != 200:
                                return False
                    except aiohttp.ClientError:
                        return False
                return True

            await eventually(ready, timeout=60, what="both APIs ready")
            statuses = []
            for n in range(LIMIT + 2):
                url = f"http://127.0.0.1:{ports[n % 2]}/api/v1/repos/{org}/r/events"
                async with s.post(url, json={"event": "push", "payload": {}}) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Each process alone would have allowed LIMIT: together they allowed LIMIT.
        assert statuses == [202] * LIMIT + [429, 429]
    finally:
        for api in apis:
            api.stop()
