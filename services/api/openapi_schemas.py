"""Component schemas of the OpenAPI document (services/api/openapi.py assembles it)."""

from __future__ import annotations

from typing import Any

from shared.core.events import EVENT_TYPES
from shared.core.messages import TRIGGERS
from shared.log.queries import STATS_MAX_ATTEMPTS, STATS_WINDOW_DAYS, STATUSES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: list[str] | None = None, **kw: Any) -> Schema:
    return {"type": "object", "properties": props, "required": required or [], **kw}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STR: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULL_TIME = nullable(TIME)
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
NOTIFY_EMAIL = nullable(
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
    "Error": obj(
        {
            "error": obj(
                {"code": STR, "message": STR, "field": STR},
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "Scope": obj({"org": STR, "repo": nullable(STR)}, ["org", "repo"]),
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
    "Webhook": obj(
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
            "notify_email": nullable(STR),
            "disabled_reason": nullable(STR),
            "disabled_at": NULL_TIME,
            "failure_count": {
                "type": "integer",
                "minimum": 0,
                "description": "consecutive failed attempts (reset by a success or re-enabling)",
            },
            "last_delivery": nullable(ref("LastDelivery")),
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
    "LastDelivery": obj(
        {
            "status": {"enum": list(STATUSES)},
            "at": TIME,
            "http_status": nullable({"type": "integer"}),
        },
        ["status", "at", "http_status"],
        description="the webhook's newest delivery: its status, its last attempt, the HTTP "
        "status that attempt got",
    ),
    "WebhookRecovered": {
        "allOf": [
            ref("Webhook"),
            obj(
                {"recovered": {"type": "integer", "minimum": 0}},
                ["recovered"],
            ),
        ],
    },
    "WebhookWithSecret": {
        "allOf": [ref("Webhook"), obj({"secret": STR}, ["secret"])],
    },
    "WebhookCreate": obj(
        {
            "url": {"type": "string", "description": "http or https URL"},
            "events": {"type": "array", "items": STR, "minItems": 1, "description": FILTER_DOC},
            "active": {"type": "boolean", "default": True},
            "content_type": {"enum": ["json", "form"], "default": "json"},
            "description": {"type": "string", "maxLength": 1000},
            "retry": nullable(ref("Retry")),
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 30, "default": 10},
            "headers": nullable(CUSTOM_HEADERS),
            "notify_email": NOTIFY_EMAIL,
            "secret": {"type": "string", "minLength": 8, "maxLength": 256},
        },
        ["url"],
        additionalProperties=False,
    ),
    "WebhookPatch": obj(
        {
            "url": STR,
            "events": {"type": "array", "items": STR, "minItems": 1},
            "active": {"type": "boolean", "description": "true re-enables and resets failures"},
            "content_type": {"enum": ["json", "form"]},
            "description": nullable({"type": "string", "maxLength": 1000}),
            "retry": nullable(ref("Retry")),
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 30},
            "headers": nullable(CUSTOM_HEADERS),
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
    "WebhookList": obj({"webhooks": {"type": "array", "items": ref("Webhook")}}, ["webhooks"]),
    "Rotation": obj(
        {"secret": STR, "previous_expires_at": TIME}, ["secret", "previous_expires_at"]
    ),
    "TokenCreate": obj(
        {"org": {"type": "string", "minLength": 1, "maxLength": 100}, "name": STR},
        ["org", "name"],
        additionalProperties=False,
    ),
    "Token": obj(
        {"id": STR, "org": STR, "name": STR, "token": STR, "created_at": TIME},
        ["id", "org", "name", "token"],
    ),
    "DeliveryRef": obj(
        {"delivery_id": {"type": "string", "format": "uuid"}, "attempt": {"type": "integer"}},
        ["delivery_id"],
    ),
    "Delivery": obj(
        {
            "id": STR,
            "webhook_id": STR,
            "event_id": STR,
            "event": STR,
            "status": {"enum": list(STATUSES)},
            "attempts": {"type": "integer"},
            "first_at": TIME,
            "last_at": TIME,
            "last_error": nullable(STR),
            "last_status": nullable({"type": "integer"}),
            "next_attempt_at": NULL_TIME,
        },
        ["id", "webhook_id", "event_id", "event", "status", "attempts"],
    ),
    "DeliveryPage": obj(
        {
            "deliveries": {"type": "array", "items": ref("Delivery")},
            "next_cursor": nullable(STR),
        },
        ["deliveries", "next_cursor"],
    ),
    "Attempt": obj(
        {
            "attempt": {"type": "integer"},
            "trigger": {"enum": list(TRIGGERS)},
            "outcome": STR,
            "started_at": TIME,
            "duration_ms": {"type": "number"},
            "request": obj(
                {
                    "headers": {"type": "object"},
                    "body": nullable(STR),
                    "truncated": {"type": "boolean"},
                },
                ["headers", "body"],
            ),
            "response": obj(
                {
                    "status": nullable({"type": "integer"}),
                    "headers": {"type": "object"},
                    "body": nullable(STR),
                    "truncated": {"type": "boolean"},
                },
                ["status", "headers", "body"],
            ),
            "error": nullable(STR),
            "resolved_ip": nullable(STR),
            "next_attempt_at": NULL_TIME,
        },
        ["attempt", "trigger", "started_at", "duration_ms", "request", "response", "error"],
    ),
    "DeliveryDetail": obj(
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
    "Recover": obj({"since": TIME}, ["since"], additionalProperties=False),
    "Count": obj({"count": {"type": "integer"}}, ["count"]),
    "Stats": obj(
        {
            "deliveries": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer", "description": "failed + dead"},
            "success_rate": nullable({"type": "number"}),
            "last_delivery_at": NULL_TIME,
            "p50_ms": nullable({"type": "number"}),
            "p99_ms": nullable({"type": "number"}),
        },
        ["deliveries", "succeeded", "failed", "success_rate", "last_delivery_at"],
        description=f"Counts per delivery from the summary table; p50/p99 over attempt "
        f"durations of the last {STATS_WINDOW_DAYS} days, at most the newest "
        f"{STATS_MAX_ATTEMPTS} attempts.",
    ),
    "EventIn": obj(
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
    "EventAccepted": obj({"event_id": STR, "duplicate": {"type": "boolean"}}, ["event_id"]),
    "Catalog": obj(
        {
            "event_types": {
                "type": "array",
                "items": obj(
                    {
                        "type": {"enum": list(EVENT_TYPES)},
                        "family": STR,
                        "action": nullable(STR),
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
    "Health": obj(
        {"status": STR, "database": {"type": "boolean"}, "kafka": {"type": "boolean"}}, ["status"]
    ),
}

SCHEMAS.update(
    {
        "WebhookTest": obj(
            {"event": {"enum": [t for t in EVENT_TYPES if t != "ping"], "default": "push"}},
            additionalProperties=False,
        ),
    }
)

SCHEMAS.update(
    {
        "BatchIn": obj(
            {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": obj(
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
        "BatchResults": obj(
            {
                "results": {
                    "type": "array",
                    "items": obj(
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
