"""Inbound webhooks (DESIGN.md section 9): the lists per repo and org, the add/edit form,
a hook's page (URL, curl example, Send test, Rotate secret, Enable/Disable, Delete, the
invocation log) and one invocation's detail."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from services.api.bodies import path_scope
from services.api.console import inbound_forms as forms
from services.api.console.views import me, notice, page, read_form, see_other
from services.api.console.views.editing import Editor
from services.api.keys import INBOUND, SETTINGS
from services.api.views.inbound import TEST_MESSAGE, invocations_page, send_test
from shared.core.errors import NotFound, ValidationError
from shared.core.inbound import LOGGED_BODY_BYTES, RESULTS, Disabled
from shared.inbound import InboundWebhook, Invocation

routes = web.RouteTableDef()
PAGE_SIZE = 25


def _added(hook: InboundWebhook) -> str:
    if hook.verify == "none":
        return "Inbound webhook added. It verifies nothing: anyone who has its URL can call it."
    return "Inbound webhook added. Its URL is below; callers prove themselves with this secret."


EDITOR = Editor(
    path="/inbound",
    new_path="/orgs/{org}/inbound/new",
    template="inbound_form.html",
    name="hook",
    fields=forms,
    store=INBOUND,
    choices=lambda: {"event_choices": forms.EVENT_CHOICES, "verify_choices": forms.VERIFY_CHOICES},
    added=_added,
    disabled="Disabled: calls to its URL are refused.",
    noun="inbound webhook",
    deleted=lambda hook: f"Deleted the inbound webhook {hook.name}: its URL answers 404 now.",
    scope_path=lambda hook: scope_path(hook.org, hook.repo),
    rotated=lambda secret: (
        secret,
        "New secret made. It is in force now: the previous one no longer works.",
    ),
    about=lambda request, hook: {"url": _url(request, hook)},
)
EDITOR.add_routes(routes)


async def _hook(request: web.Request) -> InboundWebhook:
    found: InboundWebhook = await EDITOR.item(request)
    return found


def _url(request: web.Request, hook: InboundWebhook) -> str:
    return f"{request.config_dict[SETTINGS].public_url}/hooks/in/{hook.id}"


def scope_path(org: str, repo: str | None) -> str:
    """The console path of a scope's inbound webhook list."""
    if repo is None:
        return f"/orgs/{quote(org, safe='')}/inbound"
    return f"/repos/{quote(org, safe='')}/{quote(repo, safe='')}/inbound"


@routes.get("/orgs/{org}/inbound")
@routes.get("/repos/{org}/{repo}/inbound")
async def inbound_list(request: web.Request) -> web.Response:
    org, repo = path_scope(request, me(request))
    hooks = await request.config_dict[INBOUND].list(org, repo)
    public_url = request.config_dict[SETTINGS].public_url
    context = {"org": org, "repo": repo, "hooks": hooks, "public_url": public_url}
    return await page(request, "inbound_list.html", context)


@routes.get("/inbound/{id}")
async def show(request: web.Request) -> web.Response:
    hook = await _hook(request)
    q = request.query
    result = q.get("result") or None
    errors: dict[str, str] = {}
    invocations: list[Invocation] = []
    next_cursor = None
    try:
        invocations, next_cursor = await invocations_page(
            request.config_dict[INBOUND],
            hook.id,
            limit=PAGE_SIZE,
            cursor=q.get("cursor"),
            result=result,
        )
    except ValidationError as exc:
        errors[exc.field or "result"] = exc.message
    filters = {"result": result} if result and "result" not in errors else {}
    older = None
    if next_cursor:
        older = "?" + urlencode({**filters, "cursor": next_cursor}) + "#invocations"
    url = _url(request, hook)
    context = {
        "hook": hook,
        "url": url,
        "curl": forms.curl_example(url, hook.verify),
        "scope_path": scope_path(hook.org, hook.repo),
        "invocations": invocations,
        "results": RESULTS,
        "filters": filters,
        "filter_errors": errors,
        "older": older,
        "paged": "cursor" in q,
    }
    return await page(request, "inbound.html", context)


@routes.get("/inbound/{id}/invocations/{invocation}")
async def invocation(request: web.Request) -> web.Response:
    hook = await _hook(request)
    found = await request.config_dict[INBOUND].invocation(hook.id, request.match_info["invocation"])
    if found is None:
        raise NotFound("invocation not found")
    # The log keeps the first 16 KiB (cut between characters): a body that long was cut.
    cut = found.body is not None and len(found.body.encode()) > LOGGED_BODY_BYTES - 4
    return await page(request, "invocation.html", {"hook": hook, "invocation": found, "cut": cut})


@routes.post("/inbound/{id}/test")
async def test(request: web.Request) -> web.Response:
    """Send test: the REST API's test call (same path as a real one, logged as a test)."""
    hook = await _hook(request)
    await read_form(request)
    data = {"message": TEST_MESSAGE}
    outcome: dict[str, Any]
    try:
        event_id, invocation_id = await send_test(request, hook, data, orjson.dumps(data))
    except Disabled as exc:
        outcome = {"result": "disabled", "status": exc.http_status, "error": exc.message}
    else:
        outcome = {"result": "accepted", "status": 202, "event_id": event_id}
        outcome["invocation_id"] = invocation_id
    await notice(request, test=outcome)
    see_other(f"/inbound/{hook.id}#test")
