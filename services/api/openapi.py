"""The OpenAPI 3.1 description of the API, built in code and served at
`GET /api/v1/openapi.json`. A test checks it covers every route of the app."""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

from services.api.openapi_inbound import INBOUND_SCHEMAS, inbound_paths
from services.api.openapi_ops import (
    ADMIN,
    DID,
    NO_CONTENT,
    ORG,
    REPO,
    TID,
    WID,
    Managed,
    error_response,
    json_content,
    operation,
    page_params,
    query_param,
)
from services.api.openapi_schemas import FILTER_DOC, SCHEMAS, STR, Schema
from shared.log.queries import MAX_LIMIT, STATUSES

# PATCH with "recover_since": re-enabled, and what failed or was skipped sent again.
RECOVERED = json_content("WebhookRecovered", "Re-enabled; `recovered` deliveries sent again.")
WEBHOOKS = Managed("webhook", "Webhook", prefix="Webhook", tag="webhooks")
QUEUED = {202: json_content("DeliveryRef", "Queued.")}


def _public(
    summary: str, schema: str, description: str, errors: tuple[int, ...] = (), *, tag: str
) -> Schema:
    """An operation without a token, answering 200."""
    return operation(
        summary, {200: json_content(schema, description)}, errors, public=True, tag=tag
    )


def _paths() -> dict[str, Schema]:
    hook = partial(operation, tag="webhooks")
    delivery = partial(operation, tag="deliveries")
    list_params = page_params(
        [
            query_param("status", {"enum": list(STATUSES)}, "derived status"),
            query_param("event", STR, FILTER_DOC),
        ],
        since="first attempted at or after",
        until="first attempted before",
        max_limit=MAX_LIMIT,
    )
    return {
        "/api/v1/tokens": {
            "post": operation(
                "Create an org token (shown once)." + ADMIN,
                {201: json_content("Token", "Created.")},
                (403,),
                body="TokenCreate",
                tag="tokens",
            ),
        },
        "/api/v1/tokens/{id}": {
            "delete": operation(
                "Revoke a token; it stops working at once." + ADMIN,
                {204: NO_CONTENT},
                (403,),
                params=[TID],
                tag="tokens",
            ),
        },
        "/api/v1/repos/{org}/{repo}/webhooks": WEBHOOKS.collection(
            [ORG, REPO], "Create a repo webhook.", "List a repo's webhooks."
        ),
        "/api/v1/orgs/{org}/webhooks": WEBHOOKS.collection(
            [ORG], "Create an org-level webhook.", "List an org's org-level webhooks."
        ),
        "/api/v1/webhooks/{id}": WEBHOOKS.item(
            [WID],
            "Read a webhook.",
            "Change a webhook.",
            "Delete a webhook.",
            patched={202: RECOVERED},
            patch_errors=(429,),
        ),
        "/api/v1/repos/{org}/{repo}/webhooks/{id}": WEBHOOKS.item(
            [ORG, REPO, WID],
            "Read a webhook by its repository's path (another repo's: 404).",
            "Change a webhook by its repository's path.",
            "Delete a webhook by its repository's path.",
            patched={202: RECOVERED},
            patch_errors=(429,),
        ),
        "/api/v1/repos/{org}/{repo}/webhooks/{id}/ping": {
            "post": hook(
                "Ping a webhook by its repository's path.", QUEUED, (), params=[ORG, REPO, WID]
            ),
        },
        "/api/v1/webhooks/{id}/test": {
            "post": hook(
                "Send the catalog's example of `event` (default `push`) to this webhook"
                " alone, trigger `test`, once. The body is optional.",
                QUEUED,
                (),
                body="WebhookTest",
                params=[WID],
            ),
        },
        "/api/v1/webhooks/{id}/ping": {
            "post": hook(
                "Send a `ping` event to this webhook alone, once.", QUEUED, (), params=[WID]
            ),
        },
        "/api/v1/webhooks/{id}/rotate-secret": {
            "post": hook(
                "New secret; the old one keeps signing (webhook-signature) for 24 h.",
                {200: json_content("Rotation", "Rotated.")},
                (),
                params=[WID],
            ),
        },
        "/api/v1/webhooks/{id}/deliveries": {
            "get": delivery(
                "A webhook's deliveries, newest first, keyset-paginated.",
                {200: json_content("DeliveryPage", "A page.")},
                (422,),
                params=[WID, *list_params],
            ),
        },
        "/api/v1/webhooks/{id}/recover": {
            "post": delivery(
                "Redeliver (trigger `recover`) every failed or dead delivery first attempted"
                " since `since`, newest first, at most 10000 per call.",
                {202: json_content("Count", "Queued.")},
                (),
                body="Recover",
                params=[WID],
            ),
        },
        "/api/v1/webhooks/{id}/stats": {
            "get": delivery(
                "Delivery counts and attempt latency percentiles.",
                {200: json_content("Stats", "Stats.")},
                (),
                params=[WID],
            ),
        },
        "/api/v1/deliveries/{id}": {
            "get": delivery(
                "A delivery with all its attempts.",
                {200: json_content("DeliveryDetail", "The delivery.")},
                (),
                params=[DID],
            ),
        },
        "/api/v1/deliveries/{id}/redeliver": {
            "post": delivery(
                "Send again: same delivery id, next attempt number, trigger `manual`; 409 if"
                " its webhook was deleted or the log holds no body.",
                QUEUED,
                (409,),
                params=[DID],
            ),
        },
        "/api/v1/repos/{org}/{repo}/events": {
            "post": operation(
                "Ingest an event; a repeated `id` answers 200 and delivers nothing again"
                " (409 if another repository used that id).",
                {
                    202: json_content("EventAccepted", "Accepted."),
                    200: json_content("EventAccepted", "Already accepted (same id)."),
                },
                (409, 429),
                body="EventIn",
                params=[ORG, REPO],
                tag="events",
            ),
        },
        "/api/v1/event-types": {
            "get": _public("The event catalog.", "Catalog", "The catalog.", tag="events"),
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            },
        },
        "/healthz": {
            "get": _public("Liveness: always 200.", "Health", "Alive.", tag="meta"),
        },
        "/readyz": {
            "get": operation(
                "Readiness: PostgreSQL and Kafka reachable.",
                {
                    200: json_content("Health", "Ready."),
                    503: json_content("Health", "Not ready: `database` or `kafka` is false."),
                },
                (),
                public=True,
                tag="meta",
            ),
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format; no token, no tenant data).",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Every hookline_* series of this process and the "
                        "pipeline-wide gauges.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            },
        },
    }


def _with_manage_limits(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Every change an org token makes may answer 429 (HOOKLINE_MANAGE_RATE_PER_ORG)."""
    for item in paths.values():
        for method, op in item.items():
            if method in ("post", "put", "patch", "delete") and "429" not in op["responses"]:
                op["responses"]["429"] = error_response(429)
    return paths


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The whole document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hookline",
            "version": "1.0.0",
            "description": "Webhook delivery: webhooks, tokens, event ingest and the delivery "
            'log. Errors are `{"error":{"code","message","field"?}}`. Another org\'s '
            "resource answers 404; org tokens on admin routes answer 403.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _with_manage_limits({**_paths(), **inbound_paths()}),
        "components": {
            "schemas": {**SCHEMAS, **INBOUND_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
