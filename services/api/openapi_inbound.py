"""The OpenAPI paths and schemas of inbound webhooks and per-org limits."""

from __future__ import annotations

from functools import partial

from services.api.openapi_ops import (
    ADMIN,
    ORG,
    REPO,
    Managed,
    json_content,
    operation,
    page_params,
    path_param,
    query_param,
)
from services.api.openapi_schemas import NULL_TIME, STR, TIME, Schema, nullable, obj, ref
from shared.core.events import EVENT_TYPES
from shared.core.inbound import RESULTS as INBOUND_RESULTS
from shared.core.inbound import VERIFY_MODES
from shared.limits import RANGES as LIMIT_RANGES

IID = path_param("id", "inbound webhook id")
INBOUND = Managed("inbound webhook", "InboundWebhook", prefix="Inbound", tag="inbound")


def inbound_paths() -> dict[str, Schema]:
    inbound = partial(operation, tag="inbound")
    limits = partial(operation, errors=(403,), params=[ORG], tag="limits")
    invocation_params = page_params(
        [query_param("result", {"enum": list(INBOUND_RESULTS)}, "the call's result")],
        since="received at or after",
        until="received before",
        max_limit=200,
    )
    return {
        "/api/v1/events/batch": {
            "post": operation(
                "Ingest up to 1,000 events (every org the token's); each answered as the"
                " single route would have (202, 200 duplicate, 404, 409, 422, 429), the"
                " accepted ones written in one transaction.",
                {200: json_content("BatchResults", "One result per event, in order.")},
                (),
                body="BatchIn",
                tag="events",
            ),
        },
        "/api/v1/repos/{org}/{repo}/inbound-webhooks": INBOUND.collection(
            [ORG, REPO],
            "Create a repo inbound webhook: a URL external systems call to emit events.",
            "List a repo's inbound webhooks.",
        ),
        "/api/v1/orgs/{org}/inbound-webhooks": INBOUND.collection(
            [ORG],
            "Create an org-level inbound webhook (its calls emit org events).",
            "List an org's org-level inbound webhooks.",
        ),
        "/api/v1/inbound-webhooks/{id}": INBOUND.item(
            [IID],
            "Read an inbound webhook.",
            "Change an inbound webhook (`active: false` refuses calls; the URL stays).",
            "Delete an inbound webhook: its URL answers 404 for good.",
        ),
        "/api/v1/inbound-webhooks/{id}/rotate-secret": {
            "post": inbound(
                "A new secret, in force at once.",
                {200: json_content("InboundSecret", "Rotated; shown only here.")},
                (),
                params=[IID],
            ),
        },
        "/api/v1/inbound-webhooks/{id}/test": {
            "post": inbound(
                "A test call through the same path as a real one (logged with `test: true`);"
                " the body is optional.",
                {202: json_content("InboundTestAccepted", "Accepted.")},
                (403,),
                body="InboundTest",
                params=[IID],
            ),
        },
        "/api/v1/inbound-webhooks/{id}/invocations": {
            "get": inbound(
                "Calls to an inbound webhook, accepted or refused, newest first.",
                {200: json_content("InvocationPage", "A page.")},
                (422,),
                params=[IID, *invocation_params],
            ),
        },
        "/api/v1/orgs/{org}/limits": {
            "get": limits(
                "An org's limits: as set (null: the default) and in force." + ADMIN,
                {200: json_content("Limits", "The limits.")},
            ),
            "put": limits(
                "Set an org's limits (every field; null takes the HOOKLINE_* default); in"
                " force on every replica within 5 s." + ADMIN,
                {200: json_content("Limits", "Set.")},
                body="LimitsIn",
            ),
        },
    }


_INBOUND_EVENT = {
    "enum": [t for t in EVENT_TYPES if t != "ping"],
    "description": "the type of the event each accepted call emits",
}
_VERIFY = {
    "enum": list(VERIFY_MODES),
    "description": "how a call proves it knows the secret: `X-Webhook-Secret` "
    "(secret_header), `X-Hub-Signature-256` (github), Standard Webhooks headers (standard), "
    "or nothing (none, only when asked for)",
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_TARGET = nullable({"type": "string", "minLength": 1, "maxLength": 200})
INBOUND_SCHEMAS: dict[str, Schema] = {
    "InboundWebhook": obj(
        {
            "id": STR,
            "name": STR,
            "scope": ref("Scope"),
            "target": nullable(STR),
            "event": STR,
            "verify": {"enum": list(VERIFY_MODES)},
            "active": {"type": "boolean"},
            "url": {"type": "string", "description": "{HOOKLINE_PUBLIC_URL}/hooks/in/{id}"},
            "created_at": TIME,
            "updated_at": TIME,
            "last_triggered_at": NULL_TIME,
        },
        [
            "id",
            "name",
            "scope",
            "target",
            "event",
            "verify",
            "active",
            "url",
            "created_at",
            "last_triggered_at",
        ],
    ),
    "InboundWebhookWithSecret": {
        "allOf": [ref("InboundWebhook"), obj({"secret": STR}, ["secret"])],
    },
    "InboundCreate": obj(
        {
            "name": _NAME,
            "target": _TARGET,
            "event": _INBOUND_EVENT,
            "verify": _VERIFY,
            "secret": {"type": "string", "minLength": 8, "maxLength": 256},
            "active": {"type": "boolean", "default": True},
        },
        ["name"],
        additionalProperties=False,
    ),
    "InboundPatch": obj(
        {
            "name": _NAME,
            "target": _TARGET,
            "event": _INBOUND_EVENT,
            "verify": _VERIFY,
            "active": {"type": "boolean"},
        },
        additionalProperties=False,
    ),
    "InboundList": obj(
        {"inbound_webhooks": {"type": "array", "items": ref("InboundWebhook")}},
        ["inbound_webhooks"],
    ),
    "InboundSecret": obj({"secret": STR}, ["secret"]),
    "InboundTest": obj(
        {"payload": {"type": "object", "description": "what a caller would send"}},
        additionalProperties=False,
    ),
    "InboundTestAccepted": obj(
        {"event_id": STR, "invocation_id": STR}, ["event_id", "invocation_id"]
    ),
    "Invocation": obj(
        {
            "id": STR,
            "received_at": TIME,
            "source_ip": nullable(STR),
            "headers": nullable({"type": "object"}),
            "body": nullable({"type": "string", "description": "cut at 16 KiB"}),
            "result": {"enum": list(INBOUND_RESULTS)},
            "status": {"type": "integer"},
            "event_id": nullable(STR),
            "error": nullable(STR),
            "test": {"type": "boolean"},
        },
        ["id", "received_at", "result", "status", "event_id", "error", "test"],
    ),
    "InvocationPage": obj(
        {
            "invocations": {"type": "array", "items": ref("Invocation")},
            "next_cursor": nullable(STR),
        },
        ["invocations", "next_cursor"],
    ),
}


_LIMIT = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
_LIMIT_FIELDS = tuple(LIMIT_RANGES)
INBOUND_SCHEMAS.update(
    {
        "LimitsIn": obj(
            {name: _LIMIT for name in _LIMIT_FIELDS},
            description="Every field; null (or absent) takes the HOOKLINE_* default.",
            additionalProperties=False,
        ),
        "Limits": obj(
            {
                "org": STR,
                **{name: _LIMIT for name in _LIMIT_FIELDS},
                "effective": obj(
                    {name: {"type": "integer"} for name in _LIMIT_FIELDS}, list(_LIMIT_FIELDS)
                ),
            },
            ["org", *_LIMIT_FIELDS, "effective"],
        ),
    }
)
