"""The whole pipeline as real processes: relay, matcher, two senders and the API; each
module on a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from shared.config import Settings
from tests.e2e.harness import Receiver, ServiceProcess, free_port, logs_of, wait_ready
from tests.infra import own_database


@dataclass
class Pipeline:
    env: dict[str, str]
    api_url: str
    processes: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, **env: str) -> ServiceProcess:
        n = sum(1 for p in self.processes if p.name == name) + 1
        proc = ServiceProcess(name, {**self.env, **env}, instance=f"e2e-{name}-{n}").start()
        self.processes.append(proc)
        return proc

    def running(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.name == name and p.alive]

    def logs(self) -> str:
        return logs_of(self.processes)

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


async def start_pipeline(service_env: dict[str, str], senders: int = 2, **env: str) -> Pipeline:
    port = free_port()
    full = {
        **service_env,
        "HOOKLINE_API_PORT": str(port),
        "HOOKLINE_DISABLE_AFTER_FAILURES": "3",
        "HOOKLINE_DISABLE_AFTER_SECONDS": "0",
        **env,
    }
    pipeline = Pipeline(env=full, api_url=f"http://127.0.0.1:{port}")
    for name in ("relay", "matcher", "api"):
        pipeline.start(name)
    for _ in range(senders):
        pipeline.start("sender")

    try:
        await wait_ready(pipeline.api_url, pipeline.processes, what="the API's /readyz", timeout=60)
    except BaseException:
        pipeline.stop()
        raise
    return pipeline


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, shared_database: str) -> AsyncIterator[str]:
    """Every e2e module on a database of its own: its relay publishes only the outbox rows
    its own tests wrote, never those other tests or earlier runs left unpublished."""
    async with own_database(shared_database, request.module.__name__) as url:
        yield url


@pytest.fixture(scope="module")
async def pipeline(provisioned: Settings, service_env: dict[str, str]) -> AsyncIterator[Pipeline]:
    p = await start_pipeline(service_env)
    yield p
    p.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()
