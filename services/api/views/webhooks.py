"""Webhooks: create and list per repo or org, read, patch, delete, ping, rotate the secret."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, path_scope, read_json, read_object
from services.api.keys import POOL, RATES, REDELIVERY, SETTINGS, WEBHOOKS
from services.api.paging import parse_time
from shared.core.errors import NotFound, RateLimited, ValidationError
from shared.core.events import build_body, format_timestamp, parse_event_type, ping_body
from shared.core.messages import DeliveryMessage, delivery_id_for
from shared.core.samples import example
from shared.core.webhooks import Webhook
from shared.kafka import DELIVERIES
from shared.outbox import enqueue

routes = web.RouteTableDef()


@routes.post(API + "/repos/{org}/{repo}/webhooks")
@routes.post(API + "/orgs/{org}/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    org, repo = path_scope(request, principal(request))
    body = await read_json(request)
    webhook, secret = await request.app[WEBHOOKS].create(org, repo, body)
    return json_response({**webhook.to_api(), "secret": secret}, status=201)


@routes.get(API + "/repos/{org}/{repo}/webhooks")
@routes.get(API + "/orgs/{org}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    org, repo = path_scope(request, principal(request))
    webhooks = await request.app[WEBHOOKS].list(org, repo)
    return json_response({"webhooks": [w.to_api() for w in webhooks]})


# Each route on one webhook is also served under its repository's path, as GitHub-style
# clients call it: /repos/{org}/{repo}/webhooks/{id}; another repo's webhook is 404 there.
REPO_SCOPED = API + "/repos/{org}/{repo}/webhooks/{id}"


async def _webhook_of(request: web.Request) -> Webhook:
    """The webhook the path names, as the caller may see it (404 otherwise)."""
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    info = request.match_info
    if "repo" in info and (webhook.org, webhook.repo) != (info["org"], info["repo"]):
        raise NotFound("webhook not found")
    return webhook


@routes.get(API + "/webhooks/{id}")
@routes.get(REPO_SCOPED)
async def get_webhook(request: web.Request) -> web.Response:
    return json_response((await _webhook_of(request)).to_api())


@routes.patch(API + "/webhooks/{id}")
@routes.patch(REPO_SCOPED)
async def patch_webhook(request: web.Request) -> web.Response:
    # Existence first: another org's webhook is 404 whatever the body says.
    webhook = await _webhook_of(request)
    body = await read_json(request)
    since = None
    if isinstance(body, dict) and "recover_since" in body:
        # Re-enable and send again what failed or was skipped since then (DESIGN.md 11).
        body = dict(body)
        since = parse_time(body.pop("recover_since"), "recover_since")
        if body.get("active") is not True:
            raise ValidationError(
                'recover_since needs "active": true in the same body', field="recover_since"
            )
        await _take_recover_limit(request)
    updated = await request.app[WEBHOOKS].update(webhook.id, principal(request).org, body)
    if since is None:
        return json_response(updated.to_api())
    recovered = await request.app[REDELIVERY].recover(
        webhook.id, since, statuses=("failed", "dead", "skipped")
    )
    return json_response({**updated.to_api(), "recovered": recovered}, status=202)


async def _take_recover_limit(request: web.Request) -> None:
    """A PATCH with recover_since counts as a recover call (HOOKLINE_RECOVER_RATE_PER_ORG)."""
    org = principal(request).org
    if org is None:
        return
    limit = request.app[SETTINGS].recover_rate_per_org
    refusal = await request.app[RATES].take(f"recover:{org}", limit)
    if refusal is not None:
        raise RateLimited(
            f"org {org!r} is over its limit of {limit} recover calls a minute",
            retry_after=refusal.retry_after,
        )


@routes.delete(API + "/webhooks/{id}")
@routes.delete(REPO_SCOPED)
async def delete_webhook(request: web.Request) -> web.Response:
    webhook = await _webhook_of(request)
    await request.app[WEBHOOKS].delete(webhook.id, principal(request).org)
    return web.Response(status=204)


@routes.post(API + "/webhooks/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    store, org = request.app[WEBHOOKS], principal(request).org
    webhook = await store.get(request.match_info["id"], org)
    rotation = await store.rotate(webhook.id, org)
    return json_response(
        {
            "secret": rotation.secret,
            "previous_expires_at": format_timestamp(rotation.previous_expires_at),
        }
    )


async def enqueue_ping(pool: asyncpg.Pool, webhook: Webhook) -> str:
    """Writes a `ping` event for this webhook alone (sent once, no automatic retries)
    through the outbox; returns its delivery id. The console's Send test uses it too."""
    event_id = str(uuid.uuid4())
    message = DeliveryMessage(
        delivery_id=delivery_id_for(event_id, webhook.id),
        webhook_id=webhook.id,
        org=webhook.org,
        event_id=event_id,
        event_type="ping",
        body=ping_body(webhook.id, org=webhook.org, repo=webhook.repo, now=datetime.now(UTC)),
        trigger="ping",
        single=True,
        enqueued_at=time.time(),
    )
    async with pool.acquire() as conn:
        await enqueue(conn, topic=DELIVERIES, key=message.key, value=message.encode())
    return message.delivery_id


@routes.post(API + "/webhooks/{id}/test")
async def test_webhook(request: web.Request) -> web.Response:
    """The catalog's example of `event` (default `push`) to this webhook alone, as a real
    event's body, trigger `test`, sent once."""
    webhook = await _webhook_of(request)
    raw = await request.read()
    body = await read_object(request, ("event",)) if raw.strip() else {}
    event_type = parse_event_type(body.get("event", "push"))
    if event_type == "ping":
        raise ValidationError("a ping is sent by POST /webhooks/{id}/ping", field="event")
    event_id, now = str(uuid.uuid4()), datetime.now(UTC)
    message = DeliveryMessage(
        delivery_id=delivery_id_for(event_id, webhook.id),
        webhook_id=webhook.id,
        org=webhook.org,
        event_id=event_id,
        event_type=event_type,
        body=build_body(
            example(event_type),
            full_type=event_type,
            event_id=event_id,
            created_at=now,
            org=webhook.org,
            repo=webhook.repo,
        ),
        trigger="test",
        single=True,
        enqueued_at=time.time(),
    )
    async with request.app[POOL].acquire() as conn:
        await enqueue(conn, topic=DELIVERIES, key=message.key, value=message.encode())
    return json_response({"delivery_id": message.delivery_id}, status=202)


@routes.post(API + "/webhooks/{id}/ping")
@routes.post(REPO_SCOPED + "/ping")
async def ping(request: web.Request) -> web.Response:
    """A `ping` event to this webhook alone, sent once (no automatic retries)."""
    webhook = await _webhook_of(request)
    delivery_id = await enqueue_ping(request.app[POOL], webhook)
    return json_response({"delivery_id": delivery_id}, status=202)
