"""Health for orchestrators: the readiness probes (PostgreSQL answers SELECT 1, Kafka answers
a metadata request) and the small server that gives every process `/healthz`, `/readyz`
and Prometheus' `/metrics` on HOOKLINE_METRICS_PORT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog
from aiohttp import web
from aiokafka.client import AIOKafkaClient

from shared import metrics
from shared.config import Settings
from shared.web import json_response

log = structlog.get_logger(__name__)
_PROBE_TIMEOUT = 3.0
_KAFKA_CACHE_S = 5.0  # a metadata round trip at most this often, however often /readyz runs


class KafkaProbe:
    """A bare Kafka client asked for cluster metadata; the answer is cached briefly."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._client: AIOKafkaClient | None = None
        self._checked_at = float("-inf")
        self._ok = False
        self._lock = asyncio.Lock()

    async def ready(self) -> bool:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if now - self._checked_at < _KAFKA_CACHE_S:
                return self._ok
            self._ok = await self._check()
            self._checked_at = asyncio.get_running_loop().time()
            return self._ok

    async def _check(self) -> bool:
        try:
            client = self._client
            if client is None:
                client = AIOKafkaClient(
                    bootstrap_servers=self._bootstrap, request_timeout_ms=int(_PROBE_TIMEOUT * 1000)
                )
                self._client = client  # so that close() cleans up a failed bootstrap
                await asyncio.wait_for(client.bootstrap(), _PROBE_TIMEOUT)
            await asyncio.wait_for(client.fetch_all_metadata(), _PROBE_TIMEOUT)
            return True
        except Exception as exc:  # any failure means "not ready", never an error response
            log.warning("kafka not ready", error=type(exc).__name__)
            await self.close()
            return False

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:  # closing a broken client must not fail the probe
                pass


async def database_ready(pool: asyncpg.Pool) -> bool:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), _PROBE_TIMEOUT)
        return True
    except Exception as exc:
        log.warning("database not ready", error=type(exc).__name__)
        return False


_SETTINGS = web.AppKey("settings", Settings)
_KAFKA = web.AppKey("kafka", KafkaProbe)
_POOL = web.AppKey("pool", asyncpg.Pool)


async def _healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers (a liveness probe restarts a process stuck otherwise)."""
    return json_response({"status": "ok"})


async def readiness(pool: asyncpg.Pool, kafka: KafkaProbe) -> web.Response:
    """`/readyz`: 200 when PostgreSQL and Kafka both answer, else 503 naming which."""
    database, kafka_ready = await asyncio.gather(database_ready(pool), kafka.ready())
    ready = database and kafka_ready
    return json_response(
        {"status": "ready" if ready else "unavailable", "database": database, "kafka": kafka_ready},
        status=200 if ready else 503,
    )


async def _readyz(request: web.Request) -> web.Response:
    return await readiness(request.app[_POOL], request.app[_KAFKA])


async def _metrics(request: web.Request) -> web.Response:
    """This process's series in Prometheus' text format (no tenant data: bounded labels)."""
    return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def _probes(app: web.Application) -> AsyncIterator[None]:
    settings = app[_SETTINGS]
    # Lazy: a pool that cannot connect yet must not keep the process from starting.
    app[_POOL] = await asyncpg.create_pool(
        settings.database_url, min_size=0, max_size=1, timeout=_PROBE_TIMEOUT
    )
    app[_KAFKA] = KafkaProbe(settings.kafka_bootstrap)
    yield
    await app[_KAFKA].close()
    await app[_POOL].close()


@asynccontextmanager
async def health_server(settings: Settings) -> AsyncIterator[None]:
    """Serves `/healthz`, `/readyz` and (unless HOOKLINE_METRICS=0) `/metrics` on
    0.0.0.0:HOOKLINE_METRICS_PORT while the block runs; does nothing when the port is 0
    (the default; `make up` gives each worker a port of its own)."""
    if not settings.metrics_port:
        yield
        return
    app = web.Application()
    app[_SETTINGS] = settings
    app.cleanup_ctx.append(_probes)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    if settings.metrics:
        app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", settings.metrics_port).start()
        yield
    finally:
        await runner.cleanup()
