"""Event ingest: `POST /repos/{org}/{repo}/events`, idempotent by event id."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, path_name, read_object
from services.api.keys import LIMITS, POOL, RATES
from shared.core.errors import Conflict, RateLimited, ValidationError
from shared.core.messages import make_event
from shared.outbox import enqueue_event

routes = web.RouteTableDef()
FIELDS = ("event", "action", "id", "payload")


@routes.post(API + "/repos/{org}/{repo}/events")
async def ingest(request: web.Request) -> web.Response:
    """Records the event id and writes the event to the outbox in one transaction; a
    repeated id answers 200 with the same id and enqueues nothing."""
    org, repo = path_name(request, "org"), path_name(request, "repo")
    principal(request).check_org(org)
    limit = (await request.app[LIMITS].effective(org)).ingest_rate_per_min
    refusal = await request.app[RATES].take(f"ingest:{org}", limit)
    if refusal is not None:
        raise RateLimited(
            f"org {org!r} is over its ingest limit of {limit} events a minute",
            retry_after=refusal.retry_after,
        )
    body = await read_object(request, FIELDS)
    now = datetime.now(UTC)
    event = make_event(  # validates; raises 422 naming event, action, id or payload
        org=org,
        repo=repo,
        event=body.get("event"),
        action=body.get("action"),
        payload=body.get("payload"),
        event_id=body.get("id"),
        created_at=now,
    )
    if event.type == "ping":
        raise ValidationError(
            "ping is not ingested: POST /api/v1/webhooks/{id}/ping sends one", field="event"
        )
    async with request.app[POOL].acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO events (id, org, repo, type, created_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (org, id) DO NOTHING RETURNING id",
            event.id,
            org,
            repo,
            event.type,
            now,
        )
        if inserted is None:
            seen = await conn.fetchval(
                "SELECT repo FROM events WHERE org = $1 AND id = $2", org, event.id
            )
            if seen is not None and seen != repo:
                raise Conflict(f"this event id was already used by {org}/{seen}", field="id")
            return json_response({"event_id": event.id, "duplicate": True}, status=200)
        await enqueue_event(
            conn,
            org=org,
            repo=repo,
            event=event.type,
            payload=event.payload,
            event_id=event.id,
            created_at=now,
        )
    return json_response({"event_id": event.id}, status=202)
