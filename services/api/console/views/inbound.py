"""Inbound webhooks (DESIGN.md section 9): the lists per repo and org, the add/edit form,
a hook's page (URL, curl example, Send test, Rotate secret, Enable/Disable, Delete, the
invocation log) and one invocation's detail."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from services.api.bodies import path_name
from services.api.console import inbound_forms as forms
from services.api.console.views import me, notice, page, read_form, see_other
from services.api.keys import INBOUND, SETTINGS
from services.api.views.inbound import TEST_MESSAGE, invocations_page, send_test
from shared.core.errors import Conflict, NotFound, ValidationError
from shared.core.inbound import RESULTS, Disabled
from shared.inbound import InboundWebhook, Invocation

routes = web.RouteTableDef()
PAGE_SIZE = 25


async def _hook(request: web.Request) -> InboundWebhook:
    found: InboundWebhook = await request.config_dict[INBOUND].get(
        request.match_info["id"], me(request).org
    )
    return found


def _url(request: web.Request, hook: InboundWebhook) -> str:
    return f"{request.config_dict[SETTINGS].public_url}/hooks/in/{hook.id}"


def scope_path(org: str, repo: str | None) -> str:
    """The console path of a scope's inbound webhook list."""
    if repo is None:
        return f"/orgs/{quote(org, safe='')}/inbound"
    return f"/repos/{quote(org, safe='')}/{quote(repo, safe='')}/inbound"


async def _listing(request: web.Request, org: str, repo: str | None) -> web.Response:
    me(request).check_org(org)
    hooks = await request.config_dict[INBOUND].list(org, repo)
    public_url = request.config_dict[SETTINGS].public_url
    context = {"org": org, "repo": repo, "hooks": hooks, "public_url": public_url}
    return await page(request, "inbound_list.html", context)


@routes.get("/orgs/{org}/inbound")
async def org_inbound(request: web.Request) -> web.Response:
    return await _listing(request, path_name(request, "org"), None)


@routes.get("/repos/{org}/{repo}/inbound")
async def repo_inbound(request: web.Request) -> web.Response:
    return await _listing(request, path_name(request, "org"), path_name(request, "repo"))


def _form_context(values: dict[str, Any], errors: dict[str, str], **more: Any) -> dict[str, Any]:
    return {
        "values": values,
        "errors": errors,
        "event_choices": forms.EVENT_CHOICES,
        "verify_choices": forms.VERIFY_CHOICES,
        **more,
    }


@routes.get("/orgs/{org}/inbound/new")
async def new_form(request: web.Request) -> web.Response:
    org = path_name(request, "org")
    me(request).check_org(org)
    values = forms.blank(request.query.get("repo"))
    return await page(request, "inbound_form.html", _form_context(values, {}, org=org, hook=None))


@routes.post("/orgs/{org}/inbound/new")
async def create(request: web.Request) -> web.Response:
    org = path_name(request, "org")
    me(request).check_org(org)
    form = await read_form(request)
    values = forms.submitted(form)
    secret = form.get("secret")
    try:
        repo = values["repo"] or None
        if repo is not None and (len(repo) > 100 or "/" in repo or not repo.isprintable()):
            raise ValidationError("a repository name is 1-100 characters without '/'", field="repo")
        body = forms.body_of(values, secret=secret if isinstance(secret, str) else None)
        hook, plain = await request.config_dict[INBOUND].create(org, repo, body)
    except (ValidationError, Conflict) as exc:
        field = forms.form_field(exc.field) if isinstance(exc, ValidationError) else "form"
        context = _form_context(values, {field: exc.message}, org=org, hook=None)
        return await page(request, "inbound_form.html", context, status=exc.http_status)
    text = "Inbound webhook added. Its URL is below; callers prove themselves with this secret."
    if hook.verify == "none":
        text = "Inbound webhook added. It verifies nothing: anyone who has its URL can call it."
    await notice(request, secret=plain, label="Secret", text=text)
    see_other(f"/inbound/{hook.id}")


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
    return await page(request, "invocation.html", {"hook": hook, "invocation": found})


@routes.get("/inbound/{id}/edit")
async def edit_form(request: web.Request) -> web.Response:
    hook = await _hook(request)
    context = _form_context(forms.values_of(hook), {}, org=hook.org, hook=hook)
    return await page(request, "inbound_form.html", context)


@routes.post("/inbound/{id}/edit")
async def save(request: web.Request) -> web.Response:
    hook = await _hook(request)
    form = await read_form(request)
    values = {**forms.submitted(form), "repo": hook.repo or ""}
    try:
        body = forms.changes(hook, forms.body_of(values))
        if body:
            await request.config_dict[INBOUND].update(hook.id, me(request).org, body)
    except ValidationError as exc:
        errors = {forms.form_field(exc.field): exc.message}
        context = _form_context(values, errors, org=hook.org, hook=hook)
        return await page(request, "inbound_form.html", context, status=422)
    await notice(request, text="Saved." if body else "Nothing changed.")
    see_other(f"/inbound/{hook.id}")


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


@routes.post("/inbound/{id}/rotate-secret")
async def rotate(request: web.Request) -> web.Response:
    hook = await _hook(request)
    await read_form(request)
    secret = await request.config_dict[INBOUND].rotate(hook.id, me(request).org)
    text = "New secret made. It is in force now: the previous one no longer works."
    await notice(request, secret=secret, label="Secret", text=text)
    see_other(f"/inbound/{hook.id}")


async def _set_active(request: web.Request, active: bool) -> web.Response:
    hook = await _hook(request)
    await read_form(request)
    if hook.active != active:
        await request.config_dict[INBOUND].update(hook.id, me(request).org, {"active": active})
    await notice(request, text="Enabled." if active else "Disabled: calls to its URL are refused.")
    see_other(f"/inbound/{hook.id}")


@routes.post("/inbound/{id}/enable")
async def enable(request: web.Request) -> web.Response:
    return await _set_active(request, True)


@routes.post("/inbound/{id}/disable")
async def disable(request: web.Request) -> web.Response:
    return await _set_active(request, False)


@routes.get("/inbound/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    hook = await _hook(request)
    return await page(request, "inbound_delete.html", {"hook": hook, "url": _url(request, hook)})


@routes.post("/inbound/{id}/delete")
async def delete(request: web.Request) -> web.Response:
    hook = await _hook(request)
    await read_form(request)
    await request.config_dict[INBOUND].delete(hook.id, me(request).org)
    await notice(request, text=f"Deleted the inbound webhook {hook.name}: its URL answers 404 now.")
    see_other(scope_path(hook.org, hook.repo))
