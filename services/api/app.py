"""The API's app factory, its middlewares, its lifecycle and `main()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from services.api.auth import auth_middleware
from services.api.health import KafkaProbe
from services.api.keys import (
    DELIVERIES,
    KAFKA_PROBE,
    LIMITER,
    POOL,
    REDELIVERY,
    SETTINGS,
    TOKENS,
    WEBHOOKS,
)
from services.api.ratelimit import IngestLimiter
from services.api.views import catalog, deliveries, events, tokens, webhooks
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.log.queries import DeliveryQueries
from shared.log.redelivery import Redelivery
from shared.logging import configure_logging
from shared.runtime import run
from shared.tokens import TokenStore
from shared.web import error_middleware_for
from shared.webhooks import WebhookStore

log = structlog.get_logger("services.api")
# Above max_payload_bytes so that our own check (with its clear message) fires first for
# bodies that declare their length; aiohttp's limit stops chunked bodies that do not.
_BODY_SLACK = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    """The API application; its pool and probes open and close with it (cleanup_ctx)."""
    settings.require("secret_key")
    app = web.Application(
        middlewares=[error_middleware_for("api"), auth_middleware],
        client_max_size=settings.max_payload_bytes + _BODY_SLACK,
    )
    app[SETTINGS] = settings
    app[LIMITER] = IngestLimiter(settings.ingest_rate_per_org)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, min_size=1, max_size=10)
        probe = KafkaProbe(settings.kafka_bootstrap)
        app[POOL] = pool
        app[KAFKA_PROBE] = probe
        app[TOKENS] = TokenStore(pool)
        app[DELIVERIES] = DeliveryQueries(pool)
        app[REDELIVERY] = Redelivery(pool)
        app[WEBHOOKS] = WebhookStore(
            pool,
            SecretBox(settings.secret_key),
            allow=settings.allowed_targets,
            max_per_repo=settings.max_webhooks_per_repo,
        )
        yield
        await probe.close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    for module in (tokens, webhooks, events, deliveries, catalog):
        app.add_routes(module.routes)
    return app


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serves until `stop` is set, then stops accepting and lets requests finish."""
    log = configure_logging(settings.log_level, service="api")
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.api_host, settings.api_port)
        await site.start()
        log.info("api listening", host=settings.api_host, port=settings.api_port)
        await stop.wait()
        log.info("api stopping")
    finally:
        await runner.cleanup()


def main() -> None:
    run(serve)
