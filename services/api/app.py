"""The API's app factory, its middlewares, its lifecycle and `main()`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from services.api.auth import PRINCIPAL, Handler, auth_middleware
from services.api.bodies import API
from services.api.console import PREFIX as CONSOLE
from services.api.console import create_console
from services.api.health import KafkaProbe
from services.api.keys import (
    DELIVERIES,
    EVENT_WRITER,
    INBOUND,
    INVOCATIONS,
    KAFKA_PROBE,
    LIMITS,
    PIPELINE,
    POOL,
    RATES,
    REDELIVERY,
    SETTINGS,
    TOKENS,
    WAKER,
    WEBHOOKS,
)
from services.api.views import (
    batch,
    catalog,
    deliveries,
    events,
    inbound,
    limits,
    metrics,
    tokens,
    webhooks,
)
from shared import metrics as recorded
from shared.config import Settings
from shared.core.errors import RateLimited
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.inbound import InboundStore
from shared.inbound_calls import InvocationLog
from shared.ingest import EventWriter
from shared.limits import LimitStore, OrgLimits
from shared.log.queries import DeliveryQueries
from shared.log.redelivery import Redelivery
from shared.outbox import OutboxWaker
from shared.pipeline_metrics import KafkaLag, PipelineGauges
from shared.ratelimit import SharedRateLimiter
from shared.runtime import run
from shared.tokens import TokenStore
from shared.web import app_server, error_middleware_for
from shared.webhooks import WebhookStore

log = structlog.get_logger("services.api")
# Above max_payload_bytes so that our own check (with its clear message) fires first for
# bodies that declare their length; aiohttp's limit stops chunked bodies that do not.
_BODY_SLACK = 64 * 1024


_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The ingest routes whose answers are counted by status (hookline_ingest_requests_total).
_INGEST_ROUTES = {API + "/repos/{org}/{repo}/events": "events", API + "/events/batch": "batch"}


@web.middleware
async def count_ingest(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the ingest routes' answers by status, as the client saw them (outermost)."""
    resource = request.match_info.route.resource
    route = _INGEST_ROUTES.get(resource.canonical) if resource is not None else None
    if route is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        recorded.ingest_request(route, exc.status)
        raise
    recorded.ingest_request(route, response.status)
    return response


@web.middleware
async def wake_relays(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request that changed something may have written outbox rows (an event, a ping, a
    redelivery, a webhook change): wake the relays once it has committed."""
    response = await handler(request)
    if request.method in _MUTATING and response.status < 300:
        request.app[WAKER].poke()
    return response


@web.middleware
async def manage_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Changes through the API (create, change, delete, ping, test, rotate, redeliver,
    recover) are limited per org, recover more tightly (one call may touch 10,000
    deliveries); counted across replicas. The admin token is not limited; ingest has its
    own limit."""
    caller = request.get(PRINCIPAL)
    if (
        request.method in _MUTATING
        and caller is not None
        and caller.org is not None
        and not request.path.endswith(("/events", "/events/batch"))
    ):
        s, rates = request.app[SETTINGS], request.app[RATES]
        limits = [(f"manage:{caller.org}", s.manage_rate_per_org, "changes")]
        if request.path.endswith("/recover"):
            limits.append((f"recover:{caller.org}", s.recover_rate_per_org, "recover calls"))
        for key, limit, what in limits:
            refusal = await rates.take(key, limit)
            if refusal is not None:
                raise RateLimited(
                    f"org {caller.org!r} is over its limit of {limit} {what} a minute",
                    retry_after=refusal.retry_after,
                )
    return await handler(request)


def create_app(settings: Settings) -> web.Application:
    """The API application; its pool and probes open and close with it (cleanup_ctx)."""
    settings.require("secret_key")
    app = web.Application(
        middlewares=[
            count_ingest,
            error_middleware_for("api"),
            wake_relays,
            auth_middleware,
            manage_limit,
        ],
        client_max_size=settings.max_payload_bytes + _BODY_SLACK,
    )
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, min_size=1, max_size=10)
        probe = KafkaProbe(settings.kafka_bootstrap)
        app[POOL] = pool
        app[KAFKA_PROBE] = probe
        app[TOKENS] = TokenStore(pool)
        app[DELIVERIES] = DeliveryQueries(pool)
        app[LIMITS] = LimitStore(pool, OrgLimits.defaults(settings))
        app[RATES] = SharedRateLimiter(pool)
        app[INBOUND] = InboundStore(
            pool,
            SecretBox(settings.secret_key),
            max_per_scope=settings.max_webhooks_per_repo,
            max_org=settings.max_org_webhooks,
        )
        app[WAKER] = OutboxWaker(pool)
        app[EVENT_WRITER] = EventWriter(pool)
        app[INVOCATIONS] = InvocationLog(pool, app[WAKER])
        app[REDELIVERY] = Redelivery(pool)
        app[WEBHOOKS] = WebhookStore(
            pool,
            SecretBox(settings.secret_key),
            allow=settings.allowed_targets,
            max_per_repo=settings.max_webhooks_per_repo,
            max_org=settings.max_org_webhooks,
            header_prefix=settings.header_prefix,
        )
        lag = KafkaLag(settings.kafka_bootstrap)
        app[PIPELINE] = PipelineGauges(pool, lag)
        yield
        await lag.close()
        await probe.close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    for module in (tokens, webhooks, events, batch, deliveries, catalog, inbound, limits):
        app.add_routes(module.routes)
    if settings.metrics:
        app.add_routes(metrics.routes)
    app.add_subapp(CONSOLE, create_console())
    return app


serve = app_server("api", create_app, lambda s: (s.api_host, s.api_port))


def main() -> None:
    run(serve)
