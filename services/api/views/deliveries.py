"""The delivery log: list a webhook's deliveries, read one, redeliver, recover, stats;
and how the log's typed rows are shown as JSON (bodies cut at BODY_LIMIT)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, query_int, read_object
from services.api.keys import DELIVERIES, REDELIVERY, WEBHOOKS
from services.api.paging import decode_cursor, encode_cursor, parse_time
from shared.core.events import format_timestamp
from shared.log.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    DeliveryQueries,
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
    deliveries, next_cursor = await deliveries_page(
        request.app[DELIVERIES],
        webhook.id,
        cursor=q.get("cursor"),
        status=q.get("status"),
        event=q.get("event"),
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None,
        limit=query_int(request, "limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT),
    )
    return json_response({"deliveries": deliveries, "next_cursor": next_cursor})


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


async def deliveries_page(
    queries: DeliveryQueries, webhook_id: str, *, cursor: str | None = None, **filters: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a webhook's deliveries as JSON, and the cursor of the next page (None
    after the last); `filters` are `DeliveryQueries.page`'s."""
    after = None if cursor is None else decode_cursor(cursor)
    page, more = await queries.page(webhook_id, after=after, **filters)
    next_cursor = encode_cursor(page[-1].first_at, page[-1].id) if more else None
    return [summary_json(d) for d in page], next_cursor


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
