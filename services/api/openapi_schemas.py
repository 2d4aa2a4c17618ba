"""Component schemas of the OpenAPI document (services/api/openapi.py assembles it)."""

from __future__ import annotations

from typing import Any

from shared.core.events import EVENT_TYPES
from shared.core.inbound import RESULTS as INBOUND_RESULTS
from shared.core.inbound import VERIFY_MODES
from shared.core.messages import TRIGGERS
from shared.limits import RANGES as LIMIT_RANGES
from shared.log.queries import STATS_MAX_ATTEMPTS, STATS_WINDOW_DAYS, STATUSES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: list[str] | None = None, **kw: Any) -> Schema:
    return {"type": "object", "properties": props, "required": required or [], **kw}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STR: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULL_TIME = _nullable(TIME)
ERROR_RESPONSES = {
    400: "Malformed JSON or an empty body.",
    401: "Missing, unknown or revoked bearer token.",
    403: "An org token on an admin-only route.",
    404: "No such resource, or it belongs to another org; unknown route.",
    405: "Method not allowed on this route.",
    409: "Conflicts with the current state.",
    413: "Body over HOOKLINE_MAX_PAYLOAD_BYTES.",
    422: "Valid JSON with an invalid value; `error.field` names it.",
    429: "Over a rate limit (counted across every replica); see Retry-After.",
    503: "PostgreSQL is unreachable or starting up: `unavailable`; try again after Retry-After.",
}
FILTER_DOC = "an event type, a family (`pull_request`), `family.*`, or `*`"
# A webhook's custom headers as given (DESIGN.md section 12).
NOTIFY_EMAIL = _nullable(
    {
        "type": "string",
        "format": "email",
        "maxLength": 254,
        "description": "the same notices as the org hooks get, by mail",
    }
)
CUSTOM_HEADERS: Schema = {
    "type": "object",
    "maxProperties": 10,
    "additionalProperties": {"type": "string", "maxLength": 4096},
    "description": "at most 10; names are HTTP tokens and may not replace Content-Type, "
    "Host, User-Agent, a signature header or a `<HOOKLINE_HEADER_PREFIX>-*` header; values "
    "hold no CR, LF or other control character, are encrypted at rest and read back as "
    '"••••" (sending "••••" back keeps the value held); replaced whole on PATCH',
}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {"code": STR, "message": STR, "field": STR},
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "Scope": _obj({"org": STR, "repo": _nullable(STR)}, ["org", "repo"]),
    "Retry": {
        "description": "`{schedule: [seconds...]}` or `{max_retries, interval_s}`; "
        "delays 1 s to 24 h, at most 20 retries.",
        "type": "object",
        "properties": {
            "schedule": {"type": "array", "items": {"type": "number"}},
            "max_retries": {"type": "integer"},
            "interval_s": {"type": "number"},
        },
    },
    "Webhook": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "scope": ref("Scope"),
            "url": STR,
            "events": {"type": "array", "items": STR, "description": FILTER_DOC},
            "active": {"type": "boolean"},
            "content_type": {"enum": ["json", "form"]},
            "description": STR,
            "retry": ref("Retry"),
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 30},
            "headers": {
                "type": "object",
                "additionalProperties": STR,
                "description": "custom headers sent on every attempt; values masked (••••)",
            },
            "notify_email": _nullable(STR),
            "disabled_reason": _nullable(STR),
            "disabled_at": NULL_TIME,
            "failure_count": {
                "type": "integer",
                "minimum": 0,
                "description": "consecutive failed attempts (reset by a success or re-enabling)",
            },
            "last_delivery": _nullable(ref("LastDelivery")),
            "created_at": TIME,
            "updated_at": TIME,
        },
        [
            "id",
            "scope",
            "url",
            "events",
            "active",
            "content_type",
            "timeout_s",
            "created_at",
            "failure_count",
            "last_delivery",
            "disabled_at",
        ],
    ),
    "LastDelivery": _obj(
        {
            "status": {"enum": list(STATUSES)},
            "at": TIME,
            "http_status": _nullable({"type": "integer"}),
        },
        ["status", "at", "http_status"],
        description="the webhook's newest delivery: its status, its last attempt, the HTTP "
        "status that attempt got",
    ),
    "WebhookRecovered": {
        "allOf": [
            ref("Webhook"),
            _obj(
                {"recovered": {"type": "integer", "minimum": 0}},
                ["recovered"],
            ),
        ],
    },
    "WebhookWithSecret": {
        "allOf": [ref("Webhook"), _obj({"secret": STR}, ["secret"])],
    },
    "WebhookCreate": _obj(
        {
            "url": {"type": "string", "description": "http or https URL"},
            "events": {"type": "array", "items": STR, "minItems": 1, "description": FILTER_DOC},
            "active": {"type": "boolean", "default": True},
            "content_type": {"enum": ["json", "form"], "default": "json"},
            "description": {"type": "string", "maxLength": 1000},
            "retry": _nullable(ref("Retry")),
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 30, "default": 10},
            "headers": _nullable(CUSTOM_HEADERS),
            "notify_email": NOTIFY_EMAIL,
            "secret": {"type": "string", "minLength": 8, "maxLength": 256},
        },
        ["url"],
        additionalProperties=False,
    ),
    "WebhookPatch": _obj(
        {
            "url": STR,
            "events": {"type": "array", "items": STR, "minItems": 1},
            "active": {"type": "boolean", "description": "true re-enables and resets failures"},
            "content_type": {"enum": ["json", "form"]},
            "description": _nullable({"type": "string", "maxLength": 1000}),
            "retry": _nullable(ref("Retry")),
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 30},
            "headers": _nullable(CUSTOM_HEADERS),
            "notify_email": NOTIFY_EMAIL,
            "recover_since": {
                "type": "string",
                "format": "date-time",
                "description": 'with "active": true: re-enable and redeliver what failed or '
                "was skipped since then (202, `recovered` added)",
            },
        },
        additionalProperties=False,
    ),
    "WebhookList": _obj({"webhooks": {"type": "array", "items": ref("Webhook")}}, ["webhooks"]),
    "Rotation": _obj(
        {"secret": STR, "previous_expires_at": TIME}, ["secret", "previous_expires_at"]
    ),
    "TokenCreate": _obj(
        {"org": {"type": "string", "minLength": 1, "maxLength": 100}, "name": STR},
        ["org", "name"],
        additionalProperties=False,
    ),
    "Token": _obj(
        {"id": STR, "org": STR, "name": STR, "token": STR, "created_at": TIME},
        ["id", "org", "name", "token"],
    ),
    "DeliveryRef": _obj(
        {"delivery_id": {"type": "string", "format": "uuid"}, "attempt": {"type": "integer"}},
        ["delivery_id"],
    ),
    "Delivery": _obj(
        {
            "id": STR,
            "webhook_id": STR,
            "event_id": STR,
            "event": STR,
            "status": {"enum": list(STATUSES)},
            "attempts": {"type": "integer"},
            "first_at": TIME,
            "last_at": TIME,
            "last_error": _nullable(STR),
            "last_status": _nullable({"type": "integer"}),
            "next_attempt_at": NULL_TIME,
        },
        ["id", "webhook_id", "event_id", "event", "status", "attempts"],
    ),
    "DeliveryPage": _obj(
        {
            "deliveries": {"type": "array", "items": ref("Delivery")},
            "next_cursor": _nullable(STR),
        },
        ["deliveries", "next_cursor"],
    ),
    "Attempt": _obj(
        {
            "attempt": {"type": "integer"},
            "trigger": {"enum": list(TRIGGERS)},
            "outcome": STR,
            "started_at": TIME,
            "duration_ms": {"type": "number"},
            "request": _obj(
                {
                    "headers": {"type": "object"},
                    "body": _nullable(STR),
                    "truncated": {"type": "boolean"},
                },
                ["headers", "body"],
            ),
            "response": _obj(
                {
                    "status": _nullable({"type": "integer"}),
                    "headers": {"type": "object"},
                    "body": _nullable(STR),
                    "truncated": {"type": "boolean"},
                },
                ["status", "headers", "body"],
            ),
            "error": _nullable(STR),
            "resolved_ip": _nullable(STR),
            "next_attempt_at": NULL_TIME,
        },
        ["attempt", "trigger", "started_at", "duration_ms", "request", "response", "error"],
    ),
    "DeliveryDetail": _obj(
        {
            "id": STR,
            "webhook_id": STR,
            "event_id": STR,
            "event": STR,
            "status": {"enum": list(STATUSES)},
            "attempts": {"type": "array", "items": ref("Attempt")},
        },
        ["id", "webhook_id", "event_id", "event", "status", "attempts"],
        description="Request and response bodies are cut at 16 KiB (`truncated` says so).",
    ),
    "Recover": _obj({"since": TIME}, ["since"], additionalProperties=False),
    "Count": _obj({"count": {"type": "integer"}}, ["count"]),
    "Stats": _obj(
        {
            "deliveries": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer", "description": "failed + dead"},
            "success_rate": _nullable({"type": "number"}),
            "last_delivery_at": NULL_TIME,
            "p50_ms": _nullable({"type": "number"}),
            "p99_ms": _nullable({"type": "number"}),
        },
        ["deliveries", "succeeded", "failed", "success_rate", "last_delivery_at"],
        description=f"Counts per delivery from the summary table; p50/p99 over attempt "
        f"durations of the last {STATS_WINDOW_DAYS} days, at most the newest "
        f"{STATS_MAX_ATTEMPTS} attempts.",
    ),
    "EventIn": _obj(
        {
            "event": {"type": "string", "description": "`pull_request` or `pull_request.opened`"},
            "action": STR,
            "id": {"type": "string", "minLength": 1, "maxLength": 200},
            "payload": {"type": "object"},
        },
        ["event", "payload"],
        additionalProperties=False,
        example={"event": "pull_request.opened", "id": "evt-1", "payload": {"number": 1}},
    ),
    "EventAccepted": _obj({"event_id": STR, "duplicate": {"type": "boolean"}}, ["event_id"]),
    "Catalog": _obj(
        {
            "event_types": {
                "type": "array",
                "items": _obj(
                    {
                        "type": {"enum": list(EVENT_TYPES)},
                        "family": STR,
                        "action": _nullable(STR),
                        "description": STR,
                        "example": {"type": "object", "description": "a realistic payload"},
                        "schema": {"type": "object", "description": "JSON Schema of the payload"},
                    },
                    ["type", "family", "action", "description", "example", "schema"],
                ),
            },
            "families": {"type": "object", "additionalProperties": {"type": "array", "items": STR}},
        },
        ["event_types", "families"],
    ),
    "Health": _obj(
        {"status": STR, "database": {"type": "boolean"}, "kafka": {"type": "boolean"}}, ["status"]
    ),
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
_TARGET = _nullable({"type": "string", "minLength": 1, "maxLength": 200})
SCHEMAS.update(
    {
        "InboundWebhook": _obj(
            {
                "id": STR,
                "name": STR,
                "scope": ref("Scope"),
                "target": _nullable(STR),
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
            "allOf": [ref("InboundWebhook"), _obj({"secret": STR}, ["secret"])],
        },
        "InboundCreate": _obj(
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
        "InboundPatch": _obj(
            {
                "name": _NAME,
                "target": _TARGET,
                "event": _INBOUND_EVENT,
                "verify": _VERIFY,
                "active": {"type": "boolean"},
            },
            additionalProperties=False,
        ),
        "InboundList": _obj(
            {"inbound_webhooks": {"type": "array", "items": ref("InboundWebhook")}},
            ["inbound_webhooks"],
        ),
        "InboundSecret": _obj({"secret": STR}, ["secret"]),
        "InboundTest": _obj(
            {"payload": {"type": "object", "description": "what a caller would send"}},
            additionalProperties=False,
        ),
        "InboundTestAccepted": _obj(
            {"event_id": STR, "invocation_id": STR}, ["event_id", "invocation_id"]
        ),
        "Invocation": _obj(
            {
                "id": STR,
                "received_at": TIME,
                "source_ip": _nullable(STR),
                "headers": _nullable({"type": "object"}),
                "body": _nullable({"type": "string", "description": "cut at 16 KiB"}),
                "result": {"enum": list(INBOUND_RESULTS)},
                "status": {"type": "integer"},
                "event_id": _nullable(STR),
                "error": _nullable(STR),
                "test": {"type": "boolean"},
            },
            ["id", "received_at", "result", "status", "event_id", "error", "test"],
        ),
        "InvocationPage": _obj(
            {
                "invocations": {"type": "array", "items": ref("Invocation")},
                "next_cursor": _nullable(STR),
            },
            ["invocations", "next_cursor"],
        ),
    }
)

_LIMIT = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
_LIMIT_FIELDS = tuple(LIMIT_RANGES)
SCHEMAS.update(
    {
        "LimitsIn": _obj(
            {name: _LIMIT for name in _LIMIT_FIELDS},
            description="Every field; null (or absent) takes the HOOKLINE_* default.",
            additionalProperties=False,
        ),
        "Limits": _obj(
            {
                "org": STR,
                **{name: _LIMIT for name in _LIMIT_FIELDS},
                "effective": _obj(
                    {name: {"type": "integer"} for name in _LIMIT_FIELDS}, list(_LIMIT_FIELDS)
                ),
            },
            ["org", *_LIMIT_FIELDS, "effective"],
        ),
    }
)

SCHEMAS.update(
    {
        "WebhookTest": _obj(
            {"event": {"enum": [t for t in EVENT_TYPES if t != "ping"], "default": "push"}},
            additionalProperties=False,
        ),
    }
)

SCHEMAS.update(
    {
        "BatchIn": _obj(
            {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": _obj(
                        {
                            "org": STR,
                            "repo": STR,
                            "event": STR,
                            "action": STR,
                            "id": STR,
                            "payload": {"type": "object"},
                        },
                        ["org", "repo", "event", "payload"],
                    ),
                }
            },
            ["events"],
            additionalProperties=False,
        ),
        "BatchResults": _obj(
            {
                "results": {
                    "type": "array",
                    "items": _obj(
                        {
                            "index": {"type": "integer"},
                            "status": {"type": "integer"},
                            "event_id": STR,
                            "duplicate": {"type": "boolean"},
                            "error": {"type": "object"},
                        },
                        ["index", "status"],
                    ),
                }
            },
            ["results"],
        ),
    }
)
