"""The inbound edge's app factory, lifecycle and `main()`: `POST /hooks/in/{id}`, `/healthz`
and `/readyz`, on HOOKLINE_INBOUND_HOST:HOOKLINE_INBOUND_PORT, apart from the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.inbound.receive import EDGE, Edge, routes
from shared import metrics
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.inbound import InboundStore
from shared.inbound_calls import CallGate, InvocationLog
from shared.inbound_maintenance import maintain_forever
from shared.outbox import OutboxWaker
from shared.ratelimit import SharedRateLimiter
from shared.runtime import run
from shared.web import Handler, app_server, error_middleware_for, json_response

# Above max_payload_bytes so that the handler's own check (with its clear 413) fires first.
_BODY_SLACK = 64 * 1024
_PROBE_TIMEOUT_S = 3.0
POOL_SIZE = 20
CALL_ROUTE = "/hooks/in/{id}"


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when PostgreSQL answers: every accepted call is written there, Kafka is the
    relay's business."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await request.app[EDGE].store.ping()
    except Exception:  # any failure means "not ready"
        return json_response({"status": "unavailable", "database": False}, status=503)
    return json_response({"status": "ok", "database": True})


@web.middleware
async def count_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the calls' answers by status, as the caller saw them (outermost)."""
    resource = request.match_info.route.resource
    if resource is None or resource.canonical != CALL_ROUTE:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.inbound_request(exc.status)
        raise
    metrics.inbound_request(response.status)
    return response


def create_app(settings: Settings, *, maintenance: bool = True) -> web.Application:
    """The edge application; its pool opens and closes with it (cleanup_ctx)."""
    settings.require("secret_key")
    app = web.Application(
        middlewares=[count_calls, error_middleware_for("inbound")],
        client_max_size=settings.max_payload_bytes + _BODY_SLACK,
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, min_size=2, max_size=POOL_SIZE)
        limiter = SharedRateLimiter(pool)
        box = SecretBox(settings.secret_key)
        log = InvocationLog(pool, OutboxWaker(pool))
        app[EDGE] = Edge(
            settings=settings,
            store=InboundStore(
                pool,
                box,
                max_per_scope=settings.max_webhooks_per_repo,
                max_org=settings.max_org_webhooks,
            ),
            gate=CallGate(
                pool,
                box,
                per_hook=settings.inbound_rate_per_hook,
                per_org=settings.inbound_rate_per_org,
            ),
            log=log,
        )
        stop = asyncio.Event()
        housekeeping = (
            asyncio.create_task(maintain_forever(pool, limiter, settings.retention_days, stop))
            if maintenance
            else None
        )
        yield
        stop.set()
        if housekeeping is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
        await log.close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    app.add_routes(routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


serve = app_server("inbound", create_app, lambda s: (s.inbound_host, s.inbound_port))


def main() -> None:
    """`python -m services.inbound`."""
    run(serve)
