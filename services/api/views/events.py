"""Event ingest: `POST /repos/{org}/{repo}/events`, idempotent by event id."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, path_name, read_object
from services.api.keys import EVENT_WRITER, LIMITS, RATES
from shared.core.errors import Conflict, RateLimited, ValidationError
from shared.core.messages import make_event

routes = web.RouteTableDef()
FIELDS = ("event", "action", "id", "payload")


@routes.post(API + "/repos/{org}/{repo}/events")
async def ingest(request: web.Request) -> web.Response:
    """Records the event id and writes the event to the outbox in one transaction (shared
    with concurrent requests); a repeated id answers 200 with the same id and enqueues
    nothing."""
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
    # Committed (with the requests that arrived meanwhile) before it answers.
    holder = await request.app[EVENT_WRITER].write(event, now)
    if holder is not None:
        if holder != repo:
            raise Conflict(f"this event id was already used by {org}/{holder}", field="id")
        return json_response({"event_id": event.id, "duplicate": True}, status=200)
    return json_response({"event_id": event.id}, status=202)
