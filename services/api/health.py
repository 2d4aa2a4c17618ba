"""Readiness probes: PostgreSQL answers SELECT 1, Kafka answers a metadata request."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from aiokafka.client import AIOKafkaClient

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
