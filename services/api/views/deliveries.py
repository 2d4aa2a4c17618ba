"""The delivery log: list a webhook's deliveries, read one, redeliver, recover, stats;
and how the log's typed rows are shown as JSON (cursors, bodies cut at BODY_LIMIT)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, query_int, read_object
from services.api.keys import DELIVERIES, REDELIVERY, WEBHOOKS
from shared.core.errors import ValidationError
from shared.core.events import format_timestamp, parse_timestamp
from shared.log.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    DeliveryStats,
    DeliverySummary,
    LoggedAttempt,
    LoggedDelivery,
)

routes = web.RouteTableDef()

BODY_LIMIT = 16 * 1024  # request and response bodies are cut here in API responses


@routes.get(API + "/webhooks/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    q = request.query
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    page, more = await request.app[DELIVERIES].page(
        webhook.id,
        status=q.get("status"),
        event=q.get("event"),
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None,
        limit=limit,
        after=decode_cursor(q["cursor"]) if "cursor" in q else None,
    )
    next_cursor = encode_cursor(page[-1].first_at, page[-1].id) if more else None
    return json_response(
        {"deliveries": [summary_json(d) for d in page], "next_cursor": next_cursor}
    )


@routes.get(API + "/deliveries/{id}")
async def get_delivery(request: web.Request) -> web.Response:
    found = await request.app[DELIVERIES].get(request.match_info["id"], principal(request).org)
    return json_response(delivery_json(found))


@routes.post(API + "/deliveries/{id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    msg = await request.app[REDELIVERY].redeliver(request.match_info["id"], principal(request).org)
    return json_response({"delivery_id": msg.delivery_id, "attempt": msg.attempt}, status=202)


@routes.post(API + "/webhooks/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    body = await read_object(request, ("since",))
    since = parse_time(body.get("since"), "since")
    count = await request.app[REDELIVERY].recover(webhook.id, since)
    return json_response({"count": count}, status=202)


@routes.get(API + "/webhooks/{id}/stats")
async def stats(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    return json_response(stats_json(await request.app[DELIVERIES].stats(webhook.id)))


def parse_time(value: object, field: str) -> datetime:
    """An RFC 3339 timestamp (UTC if it has no offset), or 422 naming `field`."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field)
    try:
        moment = parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field) from None
    if not 1 < moment.year < 9999:  # PostgreSQL's range is wider, but these are mistakes
        raise ValidationError(f"{field} is out of range", field=field)
    return moment


def encode_cursor(first_at: datetime, delivery_id: str) -> str:
    raw = orjson.dumps([first_at.astimezone(UTC).isoformat(), str(delivery_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (first_at, id) a page starts after; 422 naming `cursor` if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        first, ident = orjson.loads(raw)
        moment = datetime.fromisoformat(first)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError("cursor is not valid", field="cursor") from None


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _cut(text: str | None) -> tuple[str | None, bool]:
    if text is None:
        return None, False
    data = text.encode("utf-8")
    if len(data) <= BODY_LIMIT:
        return text, False
    return data[:BODY_LIMIT].decode("utf-8", errors="ignore"), True


def _delivery(row: DeliverySummary | LoggedDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event_id": row.event_id,
        "event": row.event_type,
        "status": row.status,
    }


def summary_json(row: DeliverySummary) -> dict[str, Any]:
    return {
        **_delivery(row),
        "attempts": row.attempts,
        "first_at": _ts(row.first_at),
        "last_at": _ts(row.last_at),
        "last_error": row.last_error,
        "last_status": row.last_status,
        "next_attempt_at": _ts(row.next_attempt_at),
    }


def attempt_json(row: LoggedAttempt) -> dict[str, Any]:
    req_body, req_cut = _cut(row.request_body)
    resp_body, resp_cut = _cut(row.response_body)
    return {
        "attempt": row.attempt,
        "trigger": row.trigger,
        "outcome": row.outcome,
        "started_at": _ts(row.started_at),
        "duration_ms": row.duration_ms,
        "request": {"headers": row.request_headers or {}, "body": req_body, "truncated": req_cut},
        "response": {
            "status": row.response_status,
            "headers": row.response_headers or {},
            "body": resp_body,
            "truncated": resp_cut,
        },
        "error": row.error,
        "resolved_ip": row.resolved_ip,
        "next_attempt_at": _ts(row.next_attempt_at),
    }


def delivery_json(found: LoggedDelivery) -> dict[str, Any]:
    return {**_delivery(found), "attempts": [attempt_json(a) for a in found.attempts]}


def stats_json(found: DeliveryStats) -> dict[str, Any]:
    return {
        "deliveries": found.deliveries,
        "succeeded": found.succeeded,
        "failed": found.failed,
        "success_rate": found.success_rate,
        "last_delivery_at": _ts(found.last_delivery_at),
        "p50_ms": found.p50_ms,
        "p99_ms": found.p99_ms,
    }
