"""The OpenAPI 3.1 description of the API, built in code and served at
`GET /api/v1/openapi.json`. A test checks it covers every route of the app."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from services.api.openapi_inbound import inbound_paths
from services.api.openapi_ops import (
    ADMIN,
    DID,
    NO_CONTENT,
    ORG,
    REPO,
    TID,
    WID,
    json_content,
    operation,
    query_param,
)
from services.api.openapi_schemas import (
    ERROR_RESPONSES,
    FILTER_DOC,
    SCHEMAS,
    STR,
    TIME,
    Schema,
)
from shared.log.queries import MAX_LIMIT, STATUSES

# PATCH with "recover_since": re-enabled, and what failed or was skipped sent again.
RECOVERED = json_content("WebhookRecovered", "Re-enabled; `recovered` deliveries sent again.")


def _paths() -> dict[str, Schema]:
    wh_ok = {
        201: json_content(
            "WebhookWithSecret", "Created; the secret is shown only here and on rotate."
        )
    }
    list_ok = {200: json_content("WebhookList", "Webhooks, never with secrets.")}
    list_params = [
        query_param("status", {"enum": list(STATUSES)}, "derived status"),
        query_param("event", STR, FILTER_DOC),
        query_param("since", TIME, "first attempted at or after"),
        query_param("until", TIME, "first attempted before"),
        query_param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
            "page size",
        ),
        query_param("cursor", STR, "`next_cursor` of the previous page (opaque)"),
    ]
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
        "/api/v1/repos/{org}/{repo}/webhooks": {
            "post": operation(
                "Create a repo webhook.",
                wh_ok,
                (409,),
                body="WebhookCreate",
                params=[ORG, REPO],
                tag="webhooks",
            ),
            "get": operation(
                "List a repo's webhooks.", list_ok, (), params=[ORG, REPO], tag="webhooks"
            ),
        },
        "/api/v1/orgs/{org}/webhooks": {
            "post": operation(
                "Create an org-level webhook.",
                wh_ok,
                (409,),
                body="WebhookCreate",
                params=[ORG],
                tag="webhooks",
            ),
            "get": operation(
                "List an org's org-level webhooks.", list_ok, (), params=[ORG], tag="webhooks"
            ),
        },
        "/api/v1/webhooks/{id}": {
            "get": operation(
                "Read a webhook.",
                {200: json_content("Webhook", "The webhook.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
            "patch": operation(
                "Change a webhook.",
                {200: json_content("Webhook", "Updated."), 202: RECOVERED},
                (429,),
                body="WebhookPatch",
                params=[WID],
                tag="webhooks",
            ),
            "delete": operation(
                "Delete a webhook.", {204: NO_CONTENT}, (), params=[WID], tag="webhooks"
            ),
        },
        "/api/v1/repos/{org}/{repo}/webhooks/{id}": {
            "get": operation(
                "Read a webhook by its repository's path (another repo's: 404).",
                {200: json_content("Webhook", "The webhook.")},
                (),
                params=[ORG, REPO, WID],
                tag="webhooks",
            ),
            "patch": operation(
                "Change a webhook by its repository's path.",
                {200: json_content("Webhook", "Updated."), 202: RECOVERED},
                (429,),
                body="WebhookPatch",
                params=[ORG, REPO, WID],
                tag="webhooks",
            ),
            "delete": operation(
                "Delete a webhook by its repository's path.",
                {204: NO_CONTENT},
                (),
                params=[ORG, REPO, WID],
                tag="webhooks",
            ),
        },
        "/api/v1/repos/{org}/{repo}/webhooks/{id}/ping": {
            "post": operation(
                "Ping a webhook by its repository's path.",
                {202: json_content("DeliveryRef", "Queued.")},
                (),
                params=[ORG, REPO, WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/test": {
            "post": operation(
                "Send the catalog's example of `event` (default `push`) to this webhook"
                " alone, trigger `test`, once. The body is optional.",
                {202: json_content("DeliveryRef", "Queued.")},
                (),
                body="WebhookTest",
                params=[WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/ping": {
            "post": operation(
                "Send a `ping` event to this webhook alone, once.",
                {202: json_content("DeliveryRef", "Queued.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/rotate-secret": {
            "post": operation(
                "New secret; the old one keeps signing (webhook-signature) for 24 h.",
                {200: json_content("Rotation", "Rotated.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/deliveries": {
            "get": operation(
                "A webhook's deliveries, newest first, keyset-paginated.",
                {200: json_content("DeliveryPage", "A page.")},
                (422,),
                params=[WID, *list_params],
                tag="deliveries",
            ),
        },
        "/api/v1/webhooks/{id}/recover": {
            "post": operation(
                "Redeliver (trigger `recover`) every failed or dead delivery first attempted"
                " since `since`, newest first, at most 10000 per call.",
                {202: json_content("Count", "Queued.")},
                (),
                body="Recover",
                params=[WID],
                tag="deliveries",
            ),
        },
        "/api/v1/webhooks/{id}/stats": {
            "get": operation(
                "Delivery counts and attempt latency percentiles.",
                {200: json_content("Stats", "Stats.")},
                (),
                params=[WID],
                tag="deliveries",
            ),
        },
        "/api/v1/deliveries/{id}": {
            "get": operation(
                "A delivery with all its attempts.",
                {200: json_content("DeliveryDetail", "The delivery.")},
                (),
                params=[DID],
                tag="deliveries",
            ),
        },
        "/api/v1/deliveries/{id}/redeliver": {
            "post": operation(
                "Send again: same delivery id, next attempt number, trigger `manual`; 409 if"
                " its webhook was deleted or the log holds no body.",
                {202: json_content("DeliveryRef", "Queued.")},
                (409,),
                params=[DID],
                tag="deliveries",
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
            "get": operation(
                "The event catalog.",
                {200: json_content("Catalog", "The catalog.")},
                (),
                public=True,
                tag="events",
            ),
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
            "get": operation(
                "Liveness: always 200.",
                {200: json_content("Health", "Alive.")},
                (),
                public=True,
                tag="meta",
            ),
        },
        "/readyz": {
            "get": operation(
                "Readiness: PostgreSQL and Kafka reachable.",
                {200: json_content("Health", "Ready.")},
                (503,),
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
                resp = json_content("Error", ERROR_RESPONSES[429])
                resp["headers"] = {
                    "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
                }
                op["responses"]["429"] = resp
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
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
