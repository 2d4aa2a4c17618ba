"""One delivery: every attempt's request and response, and Redeliver."""

from __future__ import annotations

from aiohttp import web

from services.api.console.views import me, notice, page, read_form, see_other
from services.api.keys import DELIVERIES, REDELIVERY, WEBHOOKS
from services.api.views.deliveries import delivery_json
from shared.core.errors import Conflict, NotFound
from shared.core.webhooks import Webhook

routes = web.RouteTableDef()


@routes.get("/deliveries/{id}")
async def show(request: web.Request) -> web.Response:
    found = await request.config_dict[DELIVERIES].get(request.match_info["id"], me(request).org)
    delivery = delivery_json(found)
    webhook: Webhook | None
    try:
        webhook = await request.config_dict[WEBHOOKS].get(delivery["webhook_id"], me(request).org)
    except NotFound:  # deleted since: the log outlives it
        webhook = None
    return await page(request, "delivery.html", {"delivery": delivery, "webhook": webhook})


@routes.post("/deliveries/{id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    await read_form(request)
    delivery_id = request.match_info["id"]
    try:
        msg = await request.config_dict[REDELIVERY].redeliver(delivery_id, me(request).org)
    except Conflict as exc:
        await notice(request, error=exc.message)
    else:
        await notice(request, text=f"Redelivery queued as attempt {msg.attempt}.")
    see_other(f"/deliveries/{delivery_id}")
