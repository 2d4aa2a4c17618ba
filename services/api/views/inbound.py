"""Inbound webhooks' management (DESIGN.md section 9): create and list per repo or org,
read, patch, delete, rotate the secret, test, and the invocation log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.api.auth import principal
from services.api.bodies import API, json_response, path_scope, query_int, read_json
from services.api.keys import INBOUND, INVOCATIONS, SETTINGS
from services.api.paging import decode_cursor, encode_cursor, parse_time
from shared.core.errors import NotFound, ValidationError
from shared.core.events import format_timestamp
from shared.core.inbound import RESULTS, Disabled, logged_body, redact_headers
from shared.inbound import InboundStore, InboundWebhook, Invocation
from shared.inbound_calls import Call, call_event

routes = web.RouteTableDef()
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
TEST_MESSAGE = "A test call from Hookline"


def _api(request: web.Request, hook: InboundWebhook) -> dict[str, Any]:
    return hook.to_api(request.app[SETTINGS].public_url)


@routes.post(API + "/repos/{org}/{repo}/inbound-webhooks")
@routes.post(API + "/orgs/{org}/inbound-webhooks")
async def create_inbound(request: web.Request) -> web.Response:
    org, repo = path_scope(request, principal(request))
    hook, secret = await request.app[INBOUND].create(org, repo, await read_json(request))
    return json_response({**_api(request, hook), "secret": secret}, status=201)


@routes.get(API + "/repos/{org}/{repo}/inbound-webhooks")
@routes.get(API + "/orgs/{org}/inbound-webhooks")
async def list_inbound(request: web.Request) -> web.Response:
    org, repo = path_scope(request, principal(request))
    hooks = await request.app[INBOUND].list(org, repo)
    return json_response({"inbound_webhooks": [_api(request, h) for h in hooks]})


@routes.get(API + "/inbound-webhooks/{id}")
async def get_inbound(request: web.Request) -> web.Response:
    hook = await request.app[INBOUND].get(request.match_info["id"], principal(request).org)
    return json_response(_api(request, hook))


@routes.patch(API + "/inbound-webhooks/{id}")
async def patch_inbound(request: web.Request) -> web.Response:
    store, org = request.app[INBOUND], principal(request).org
    hook = await store.get(request.match_info["id"], org)  # 404 before the body is judged
    updated = await store.update(hook.id, org, await read_json(request))
    return json_response(_api(request, updated))


@routes.delete(API + "/inbound-webhooks/{id}")
async def delete_inbound(request: web.Request) -> web.Response:
    await request.app[INBOUND].delete(request.match_info["id"], principal(request).org)
    return web.Response(status=204)


@routes.post(API + "/inbound-webhooks/{id}/rotate-secret")
async def rotate_inbound_secret(request: web.Request) -> web.Response:
    store, org = request.app[INBOUND], principal(request).org
    hook = await store.get(request.match_info["id"], org)
    return json_response({"secret": await store.rotate(hook.id, org)})


async def _test_payload(request: web.Request) -> tuple[dict[str, Any], bytes]:
    """The optional `{"payload"}` of a test call, default a short message."""
    raw = await request.read()
    if not raw.strip():
        return {"message": TEST_MESSAGE}, b""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    for key in body:
        if key != "payload":
            raise ValidationError(f"unknown field '{key}'", field=key)
    payload = body.get("payload", {"message": TEST_MESSAGE})
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object", field="payload")
    return payload, raw


async def send_test(
    request: web.Request, hook: InboundWebhook, data: dict[str, Any], raw: bytes
) -> tuple[str, str]:
    """A test call to `hook` through the same path as a real one (minus the caller's proof,
    which the signed-in token replaces), logged with `"test": true`. The REST route's test
    and the console's Send test both come here. Returns (event id, invocation id); a
    disabled hook's test is logged as refused and raises Disabled."""
    target = await request.config_dict[INBOUND].for_call(hook.id)
    if target is None:  # deleted since it was read
        raise NotFound("inbound webhook not found")
    call = Call(
        id=str(uuid.uuid4()),
        received_at=datetime.now(UTC),
        source_ip=request.remote,
        headers=redact_headers(request.headers.items()),
        body=logged_body(raw),
        test=True,
    )
    log = request.config_dict[INVOCATIONS]
    if not target.active:
        error = Disabled("this inbound webhook is disabled; enable it to test it")
        await log.refuse(target, call, result="disabled", status=403, error=error.message)
        raise error
    event_id, _ = await log.accept(target, call, call_event(target, call, data), None)
    return event_id, call.id


@routes.post(API + "/inbound-webhooks/{id}/test")
async def test_inbound(request: web.Request) -> web.Response:
    hook = await request.app[INBOUND].get(request.match_info["id"], principal(request).org)
    data, raw = await _test_payload(request)
    event_id, invocation_id = await send_test(request, hook, data, raw)
    return json_response({"event_id": event_id, "invocation_id": invocation_id}, status=202)


def _invocation_api(inv: Invocation) -> dict[str, Any]:
    return {
        "id": inv.id,
        "received_at": format_timestamp(inv.received_at),
        "source_ip": inv.source_ip,
        "headers": inv.headers,
        "body": inv.body,
        "result": inv.result,
        "status": inv.status,
        "event_id": inv.event_id,
        "error": inv.error,
        "test": inv.test,
    }


async def invocations_page(
    store: InboundStore,
    hook_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    result: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[Invocation], str | None]:
    """A page of a hook's invocations, newest first, and the cursor of the next page (None
    after the last), for the API's list and the console's log; 422 naming a bad `result`
    or `cursor`."""
    if result is not None and result not in RESULTS:
        raise ValidationError(f"result must be one of {', '.join(RESULTS)}", field="result")
    after = None
    if cursor:
        moment, ident = decode_cursor(cursor)
        after = (moment, str(ident))
    rows = await store.invocations(
        hook_id, result=result, since=since, until=until, limit=limit + 1, after=after
    )
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], None if last is None else encode_cursor(last.received_at, last.id)


@routes.get(API + "/inbound-webhooks/{id}/invocations")
async def list_invocations(request: web.Request) -> web.Response:
    store = request.app[INBOUND]
    hook = await store.get(request.match_info["id"], principal(request).org)
    q = request.query
    rows, next_cursor = await invocations_page(
        store,
        hook.id,
        limit=query_int(request, "limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT),
        cursor=q.get("cursor"),
        result=q.get("result"),
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None,
    )
    return json_response(
        {"invocations": [_invocation_api(r) for r in rows], "next_cursor": next_cursor}
    )
