"""One webhook: its page (stats, chart, recent deliveries), the add/edit form, and its
actions (Send test, Rotate secret, Enable, Disable, recover, Delete)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from services.api.console import forms, queries
from services.api.console.render import event_groups
from services.api.console.views import me, notice, page, read_form, see_other
from services.api.console.views.editing import Editor
from services.api.keys import DELIVERIES, POOL, REDELIVERY, WEBHOOKS
from services.api.paging import parse_time
from services.api.views.deliveries import deliveries_page, delivery_json
from services.api.views.webhooks import enqueue_ping
from shared.core.errors import NotFound, ValidationError
from shared.core.events import EVENT_TYPES, FAMILIES
from shared.core.webhooks import Webhook
from shared.log.queries import STATUSES

routes = web.RouteTableDef()
PAGE_SIZE = 25
PING_WAIT_S = 3.0  # Send test waits this long for the answer before showing the page
PING_REFRESH_S = 60  # then the page reloads itself while waiting, for at most this long


EDITOR = Editor(
    path="/webhooks",
    new_path="/orgs/{org}/webhooks/new",
    template="form.html",
    name="webhook",
    fields=forms,
    store=WEBHOOKS,
    choices=lambda: {"groups": event_groups(), "content_types": forms.CONTENT_TYPES},
    added=lambda webhook: "Webhook added.",
    disabled="Disabled.",
    noun="webhook",
    deleted=lambda webhook: f"Deleted the webhook to {webhook.url}.",
    scope_path=lambda webhook: _scope_path(webhook),
    rotated=lambda rotation: (
        rotation.secret,
        "New secret made. The previous one keeps signing (webhook-signature) until "
        + rotation.previous_expires_at.strftime("%Y-%m-%d %H:%M UTC")
        + ".",
    ),
)
EDITOR.add_routes(routes)


async def _webhook(request: web.Request) -> Webhook:
    found: Webhook = await EDITOR.item(request)
    return found


def _scope_path(webhook: Webhook) -> str:
    org = quote(webhook.org, safe="")
    if webhook.repo is None:
        return f"/orgs/{org}/webhooks"
    return f"/repos/{org}/{quote(webhook.repo, safe='')}"


async def _ping_result(request: web.Request, webhook: Webhook) -> dict[str, Any] | None:
    delivery_id = request.query.get("ping")
    if not delivery_id:
        return None
    try:
        found = delivery_json(
            await request.config_dict[DELIVERIES].get(delivery_id, me(request).org)
        )
    except NotFound:
        try:
            waited = time.time() - float(request.query.get("sent", ""))
        except ValueError:
            waited = PING_REFRESH_S
        return {"id": delivery_id, "pending": True, "waiting": -5 <= waited < PING_REFRESH_S}
    if found["webhook_id"] != webhook.id:
        return None
    return {"id": delivery_id, "pending": False, "delivery": found, "last": found["attempts"][-1]}


@routes.get("/webhooks/{id}")
async def show(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    pool, log = request.config_dict[POOL], request.config_dict[DELIVERIES]
    now = datetime.now(UTC)
    q = request.query
    status, event = q.get("status") or None, q.get("event", "").strip() or None
    errors: dict[str, str] = {}
    deliveries: list[dict[str, Any]] = []
    next_cursor = None
    try:
        deliveries, next_cursor = await deliveries_page(
            log, webhook.id, status=status, event=event, limit=PAGE_SIZE, cursor=q.get("cursor")
        )
    except ValidationError as exc:
        errors[exc.field or "status"] = exc.message
    filters = {k: v for k, v in (("status", status), ("event", event)) if v}
    older = None
    if next_cursor:
        older = "?" + urlencode({**filters, "cursor": next_cursor}) + "#deliveries"
    ping = await _ping_result(request, webhook)
    context = {
        "webhook": webhook,
        "scope_path": _scope_path(webhook),
        "health": (await queries.health_of(pool, [webhook.id], now))[webhook.id],
        "stats": await log.stats(webhook.id),
        "hours": await queries.hourly(pool, webhook.id, now),
        "deliveries": deliveries,
        "durations": await queries.durations(pool, deliveries),
        "filters": filters,
        "filter_errors": errors,
        "statuses": STATUSES,
        "event_choices": FAMILIES + tuple(t for t in EVENT_TYPES if "." in t),
        "older": older,
        "paged": "cursor" in q,
        "ping": ping,
        "refresh": ping is not None and ping.get("waiting", False),
    }
    return await page(request, "webhook.html", context)


@routes.post("/webhooks/{id}/ping")
async def send_test(request: web.Request) -> web.Response:
    """Send test: a ping to this webhook alone; waits briefly so the answer shows inline."""
    webhook = await _webhook(request)
    await read_form(request)
    delivery_id = await enqueue_ping(request.config_dict[POOL], webhook)
    deadline = time.monotonic() + PING_WAIT_S
    while time.monotonic() < deadline:
        try:
            await request.config_dict[DELIVERIES].get(delivery_id, me(request).org)
            break
        except NotFound:
            await asyncio.sleep(0.2)
    see_other(f"/webhooks/{webhook.id}?ping={delivery_id}&sent={int(time.time())}#test")


@routes.post("/webhooks/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    """Redeliver every failed or dead delivery since a moment (UTC)."""
    webhook = await _webhook(request)
    form = await read_form(request)
    try:
        since = parse_time(form.get("since"), "since")
    except ValidationError as exc:
        await notice(request, error=f"Recover: {exc.message}.")
        see_other(f"/webhooks/{webhook.id}#recover")
    count = await request.config_dict[REDELIVERY].recover(webhook.id, since)
    plural = "delivery" if count == 1 else "deliveries"
    text = f"Redelivering {count} failed {plural} since {since:%Y-%m-%d %H:%M} UTC."
    await notice(request, text=text)
    see_other(f"/webhooks/{webhook.id}")
