"""`POST /hooks/in/{id}`: judge one call, log it, and turn an accepted one into an event.

The order of the checks is the cost of each: the hook (one indexed read), whether it is
disabled, the shared rate limit (before any body is read), the body's size, the proof of
the secret, then the body's shape. Every call to a known id is logged with its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aiohttp import web

from shared import metrics
from shared.config import Settings
from shared.core.errors import HooklineError, NotFound, PayloadTooLarge, RateLimited
from shared.core.ids import random_uuid
from shared.core.inbound import (
    Disabled,
    idempotency_key,
    logged_body,
    parse_call_body,
    redact_headers,
    result_of,
    verify_call,
)
from shared.core.inbound import client_ip as _client_ip
from shared.inbound import CallTarget, InboundStore
from shared.inbound_calls import Call, CallGate, InvocationLog, call_event
from shared.ratelimit import Refusal
from shared.web import json_response

_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Edge:
    """What the handler needs, built by the app factory."""

    settings: Settings
    store: InboundStore
    gate: CallGate
    log: InvocationLog


EDGE = web.AppKey("edge", Edge)
routes = web.RouteTableDef()


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it is known to be over `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)


def _call(request: web.Request, settings: Settings) -> Call:
    return Call(
        id=random_uuid(),
        received_at=datetime.now(UTC),
        source_ip=_client_ip(
            request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
        ),
        headers=redact_headers(request.headers.items()),
        body=None,
    )


async def _admit(
    request: web.Request, edge: Edge, hook: CallTarget, refusal: Refusal | None
) -> bytes:
    """Raises the refusal of a call that may not go on; returns its raw body."""
    if not hook.active:
        raise Disabled("this inbound webhook is disabled; its owner can enable it")
    if refusal is not None:
        scope = "inbound webhook" if refusal.key.startswith("inbound:hook:") else "org"
        metrics.rate_limited(refusal.key)
        raise RateLimited(
            f"over the {scope}'s limit of {refusal.limit} calls a minute",
            retry_after=refusal.retry_after,
        )
    return await read_body(request, edge.settings.max_payload_bytes)


@routes.post("/hooks/in/{id}")
async def receive(request: web.Request) -> web.Response:
    edge = request.app[EDGE]
    s = edge.settings
    hook, refusal = await edge.gate.admit(request.match_info["id"])
    if hook is None:
        raise NotFound("no such inbound webhook")
    call = _call(request, s)
    try:
        raw = await _admit(request, edge, hook, refusal)
        call = replace(call, body=logged_body(raw))
        verify_call(hook.verify, hook.secret, request.headers, raw, now=time.time())
        key = idempotency_key(hook.verify, request.headers)
        data = parse_call_body(request.headers.get("Content-Type", ""), raw)
        event = call_event(hook, call, data)
    except HooklineError as exc:
        await edge.log.refuse(
            hook, call, result=result_of(exc), status=exc.http_status, error=exc.message
        )
        raise
    event_id, duplicate = await edge.log.accept(hook, call, event, key)
    if duplicate:
        return json_response({"event_id": event_id, "duplicate": True}, status=200)
    return json_response({"event_id": event_id}, status=202)
