"""The delivery log: list a webhook's deliveries, read one, redeliver, recover, stats."""

from __future__ import annotations

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, query_int, read_object
from services.api.keys import DELIVERIES, WEBHOOKS
from shared.deliveries import DEFAULT_LIMIT, MAX_LIMIT, parse_time

routes = web.RouteTableDef()


@routes.get(API + "/webhooks/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    q = request.query
    deliveries, next_cursor = await request.app[DELIVERIES].page(
        webhook.id,
        status=q.get("status"),
        event=q.get("event"),
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None,
        limit=query_int(request, "limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT),
        cursor=q.get("cursor"),
    )
    return json_response({"deliveries": deliveries, "next_cursor": next_cursor})


@routes.get(API + "/deliveries/{id}")
async def get_delivery(request: web.Request) -> web.Response:
    found = await request.app[DELIVERIES].get(request.match_info["id"], principal(request).org)
    return json_response(found)


@routes.post(API + "/deliveries/{id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    msg = await request.app[DELIVERIES].redeliver(request.match_info["id"], principal(request).org)
    return json_response({"delivery_id": msg.delivery_id, "attempt": msg.attempt}, status=202)


@routes.post(API + "/webhooks/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    body = await read_object(request, ("since",))
    since = parse_time(body.get("since"), "since")
    count = await request.app[DELIVERIES].recover(webhook.id, since)
    return json_response({"count": count}, status=202)


@routes.get(API + "/webhooks/{id}/stats")
async def stats(request: web.Request) -> web.Response:
    webhook = await request.app[WEBHOOKS].get(request.match_info["id"], principal(request).org)
    return json_response(await request.app[DELIVERIES].stats(webhook.id))
