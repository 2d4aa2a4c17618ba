"""Batch ingest (DESIGN.md section 12): `POST /events/batch`, up to 1,000 events, each
answered as the single route would have; the accepted ones written in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, read_object
from services.api.keys import LIMITS, POOL, RATES
from shared.core.errors import Conflict, HooklineError, NotFound, RateLimited, ValidationError
from shared.core.messages import EventMessage, make_event
from shared.db import db_errors
from shared.ingest import write_events

routes = web.RouteTableDef()
MAX_EVENTS = 1_000
_ITEM_FIELDS = ("org", "repo", "event", "action", "id", "payload")


@dataclass
class _Item:
    index: int
    result: dict[str, Any]
    event: EventMessage | None = None


def _refused(index: int, exc: HooklineError) -> dict[str, Any]:
    return {"index": index, "status": exc.http_status, "error": exc.to_dict()["error"]}


def _validate(index: int, raw: object, caller_org: str | None, now: datetime) -> _Item:
    """One entry as the single route would judge it (before its rate limit)."""
    try:
        if not isinstance(raw, dict):
            raise ValidationError("each event must be a JSON object", field=f"events[{index}]")
        for key in raw:
            if key not in _ITEM_FIELDS:
                raise ValidationError(f"unknown field '{key}'", field=key)
        org = raw.get("org")
        if caller_org is not None and org != caller_org:
            raise NotFound("org not found")  # another org's: as the single route, a 404
        event = make_event(
            org=org,  # type: ignore[arg-type]
            repo=raw.get("repo"),  # type: ignore[arg-type]
            event=raw.get("event"),
            action=raw.get("action"),
            payload=raw.get("payload"),
            event_id=raw.get("id"),
            created_at=now,
        )
        if event.repo is None:
            raise ValidationError("repo must be 1-100 characters without '/'", field="repo")
        if event.type == "ping":
            raise ValidationError("ping is not ingested", field="event")
    except HooklineError as exc:
        return _Item(index, _refused(index, exc))
    return _Item(index, {"index": index, "status": 202, "event_id": event.id}, event)


async def _limit(request: web.Request, items: list[_Item]) -> None:
    """Counts each valid event against its org's ingest limit (one statement for all)."""
    limits = request.app[LIMITS]
    pending = [i for i in items if i.event is not None]
    orgs = {i.event.org for i in pending if i.event is not None}
    per_org = {org: (await limits.effective(org)).ingest_rate_per_min for org in orgs}
    refusals = await request.app[RATES].take_many(
        [(f"ingest:{i.event.org}", per_org[i.event.org]) for i in pending if i.event is not None]
    )
    for item, refusal in zip(pending, refusals, strict=True):
        if refusal is not None and item.event is not None:
            exc = RateLimited(
                f"org {item.event.org!r} is over its ingest limit", retry_after=refusal.retry_after
            )
            item.result, item.event = _refused(item.index, exc), None


@routes.post(API + "/events/batch")
async def ingest_batch(request: web.Request) -> web.Response:
    body = await read_object(request, ("events",))
    raw = body.get("events")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_EVENTS:
        raise ValidationError(f"events must be a list of 1-{MAX_EVENTS} events", field="events")
    now = datetime.now(UTC)
    caller = principal(request).org
    items = [_validate(n, entry, caller, now) for n, entry in enumerate(raw)]
    await _limit(request, items)
    first: dict[tuple[str, str], _Item] = {}
    for item in items:  # a repeat inside the batch is a duplicate of its first
        if item.event is not None:
            key = (item.event.org, item.event.id)
            if key in first:
                item.result = {**first[key].result, "index": item.index, "status": 200}
                item.result["duplicate"] = True
                item.event = None
            else:
                first[key] = item
    fresh = [i for i in items if i.event is not None]
    if fresh:
        events = [i.event for i in fresh if i.event is not None]
        with db_errors():
            async with request.app[POOL].acquire() as conn:
                claimed, seen = await write_events(conn, events, [now] * len(events))
        for item in fresh:
            event = item.event
            if event is None or (event.org, event.id) in claimed:
                continue
            used_by = seen.get((event.org, event.id))
            if used_by not in (None, event.repo):
                item.result = _refused(
                    item.index,
                    Conflict(
                        f"this event id was already used by {event.org}/{used_by}", field="id"
                    ),
                )
            else:
                item.result = {**item.result, "status": 200, "duplicate": True}
    return json_response({"results": [i.result for i in items]})
