"""The API's app factory, its error middleware, its lifecycle and `main()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from services.api.auth import Handler, auth_middleware
from services.api.bodies import json_response
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
from shared.core.errors import HooklineError, RateLimited
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.log.queries import DeliveryQueries
from shared.log.redelivery import Redelivery
from shared.logging import configure_logging
from shared.runtime import run
from shared.tokens import TokenStore
from shared.webhooks import WebhookStore

log = structlog.get_logger("services.api")
# Above max_payload_bytes so that our own check (with its clear message) fires first for
# bodies that declare their length; aiohttp's limit stops chunked bodies that do not.
_BODY_SLACK = 64 * 1024
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response({"error": error}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become responses: `{"error":{"code","message","field"?}}`."""
    try:
        return await handler(request)
    except HooklineError as exc:
        response = json_response(exc.to_dict(), status=exc.http_status)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return _error(413, "payload_too_large", "the body is over the size limit")
        message = {404: "no such route", 405: f"method {request.method} not allowed here"}.get(
            exc.status, exc.reason
        )
        response = _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except asyncpg.DataError as exc:
        # A value PostgreSQL cannot store (e.g. a NUL character in a string) is bad input.
        log.info("value refused by the database", error=type(exc).__name__, path=request.path)
        return _error(422, "validation_error", "a value in the request cannot be stored", "body")
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        log.warning("dependency unavailable", error=type(exc).__name__, path=request.path)
        return _error(503, "unavailable", "a dependency is unavailable; try again")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        return _error(500, "internal", "internal error")


def create_app(settings: Settings) -> web.Application:
    """The API application; its pool and probes open and close with it (cleanup_ctx)."""
    settings.require("secret_key")
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
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
