"""The OpenAPI 3.1 description of the API, built in code and served at
`GET /api/v1/openapi.json`. A test checks it covers every route of the app."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from services.api.openapi_schemas import (
    ERROR_RESPONSES,
    FILTER_DOC,
    SCHEMAS,
    STR,
    TIME,
    Schema,
    ref,
)
from shared.core.inbound import RESULTS as INBOUND_RESULTS
from shared.log.queries import MAX_LIMIT, STATUSES


def _json(schema: str, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def _op(
    summary: str,
    ok: dict[int, Schema],
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    params: list[Schema] | None = None,
    public: bool = False,
    tag: str,
) -> Schema:
    responses: dict[str, Schema] = {str(code): resp for code, resp in ok.items()}
    codes = set(errors) | ({404, 405} if not public else set())
    if not public:
        codes.add(401)
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        resp = _json("Error", ERROR_RESPONSES[code])
        if code == 429:
            resp["headers"] = {
                "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
            }
        responses[str(code)] = resp
    op: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if public:
        op["security"] = []
    return op


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": description}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


ORG, REPO = _path("org", "organisation"), _path("repo", "repository")
WID, DID, TID = _path("id", "webhook id"), _path("id", "delivery id"), _path("id", "token id")
IID = _path("id", "inbound webhook id")
NO_CONTENT = {"description": "Done."}
ADMIN = " Admin token only (an org token answers 403)."


def _paths() -> dict[str, Schema]:
    wh_ok = {
        201: _json("WebhookWithSecret", "Created; the secret is shown only here and on rotate.")
    }
    list_ok = {200: _json("WebhookList", "Webhooks, never with secrets.")}
    ih_ok = {
        201: _json(
            "InboundWebhookWithSecret", "Created; the secret is shown only here and on rotate."
        )
    }
    ih_list = {200: _json("InboundList", "Inbound webhooks, never with secrets.")}
    list_params = [
        _query("status", {"enum": list(STATUSES)}, "derived status"),
        _query("event", STR, FILTER_DOC),
        _query("since", TIME, "first attempted at or after"),
        _query("until", TIME, "first attempted before"),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
            "page size",
        ),
        _query("cursor", STR, "`next_cursor` of the previous page (opaque)"),
    ]
    return {
        "/api/v1/tokens": {
            "post": _op(
                "Create an org token (shown once)." + ADMIN,
                {201: _json("Token", "Created.")},
                (403,),
                body="TokenCreate",
                tag="tokens",
            ),
        },
        "/api/v1/tokens/{id}": {
            "delete": _op(
                "Revoke a token; it stops working at once." + ADMIN,
                {204: NO_CONTENT},
                (403,),
                params=[TID],
                tag="tokens",
            ),
        },
        "/api/v1/repos/{org}/{repo}/webhooks": {
            "post": _op(
                "Create a repo webhook.",
                wh_ok,
                (409,),
                body="WebhookCreate",
                params=[ORG, REPO],
                tag="webhooks",
            ),
            "get": _op("List a repo's webhooks.", list_ok, (), params=[ORG, REPO], tag="webhooks"),
        },
        "/api/v1/orgs/{org}/webhooks": {
            "post": _op(
                "Create an org-level webhook.",
                wh_ok,
                (409,),
                body="WebhookCreate",
                params=[ORG],
                tag="webhooks",
            ),
            "get": _op(
                "List an org's org-level webhooks.", list_ok, (), params=[ORG], tag="webhooks"
            ),
        },
        "/api/v1/webhooks/{id}": {
            "get": _op(
                "Read a webhook.",
                {200: _json("Webhook", "The webhook.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
            "patch": _op(
                "Change a webhook.",
                {200: _json("Webhook", "Updated.")},
                (),
                body="WebhookPatch",
                params=[WID],
                tag="webhooks",
            ),
            "delete": _op("Delete a webhook.", {204: NO_CONTENT}, (), params=[WID], tag="webhooks"),
        },
        "/api/v1/webhooks/{id}/ping": {
            "post": _op(
                "Send a `ping` event to this webhook alone, once.",
                {202: _json("DeliveryRef", "Queued.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/rotate-secret": {
            "post": _op(
                "New secret; the old one keeps signing (webhook-signature) for 24 h.",
                {200: _json("Rotation", "Rotated.")},
                (),
                params=[WID],
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}/deliveries": {
            "get": _op(
                "A webhook's deliveries, newest first, keyset-paginated.",
                {200: _json("DeliveryPage", "A page.")},
                (422,),
                params=[WID, *list_params],
                tag="deliveries",
            ),
        },
        "/api/v1/webhooks/{id}/recover": {
            "post": _op(
                "Redeliver (trigger `recover`) every failed or dead delivery first attempted"
                " since `since`, newest first, at most 10000 per call.",
                {202: _json("Count", "Queued.")},
                (),
                body="Recover",
                params=[WID],
                tag="deliveries",
            ),
        },
        "/api/v1/webhooks/{id}/stats": {
            "get": _op(
                "Delivery counts and attempt latency percentiles.",
                {200: _json("Stats", "Stats.")},
                (),
                params=[WID],
                tag="deliveries",
            ),
        },
        "/api/v1/deliveries/{id}": {
            "get": _op(
                "A delivery with all its attempts.",
                {200: _json("DeliveryDetail", "The delivery.")},
                (),
                params=[DID],
                tag="deliveries",
            ),
        },
        "/api/v1/deliveries/{id}/redeliver": {
            "post": _op(
                "Send again: same delivery id, next attempt number, trigger `manual`; 409 if"
                " its webhook was deleted or the log holds no body.",
                {202: _json("DeliveryRef", "Queued.")},
                (409,),
                params=[DID],
                tag="deliveries",
            ),
        },
        "/api/v1/repos/{org}/{repo}/events": {
            "post": _op(
                "Ingest an event; a repeated `id` answers 200 and delivers nothing again"
                " (409 if another repository used that id).",
                {
                    202: _json("EventAccepted", "Accepted."),
                    200: _json("EventAccepted", "Already accepted (same id)."),
                },
                (409, 429),
                body="EventIn",
                params=[ORG, REPO],
                tag="events",
            ),
        },
        "/api/v1/repos/{org}/{repo}/inbound-webhooks": {
            "post": _op(
                "Create a repo inbound webhook: a URL external systems call to emit events.",
                ih_ok,
                (409,),
                body="InboundCreate",
                params=[ORG, REPO],
                tag="inbound",
            ),
            "get": _op(
                "List a repo's inbound webhooks.", ih_list, (), params=[ORG, REPO], tag="inbound"
            ),
        },
        "/api/v1/orgs/{org}/inbound-webhooks": {
            "post": _op(
                "Create an org-level inbound webhook (its calls emit org events).",
                ih_ok,
                (409,),
                body="InboundCreate",
                params=[ORG],
                tag="inbound",
            ),
            "get": _op(
                "List an org's org-level inbound webhooks.",
                ih_list,
                (),
                params=[ORG],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}": {
            "get": _op(
                "Read an inbound webhook.",
                {200: _json("InboundWebhook", "The inbound webhook.")},
                (),
                params=[IID],
                tag="inbound",
            ),
            "patch": _op(
                "Change an inbound webhook (`active: false` refuses calls; the URL stays).",
                {200: _json("InboundWebhook", "Updated.")},
                (),
                body="InboundPatch",
                params=[IID],
                tag="inbound",
            ),
            "delete": _op(
                "Delete an inbound webhook: its URL answers 404 for good.",
                {204: NO_CONTENT},
                (),
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/rotate-secret": {
            "post": _op(
                "A new secret, in force at once.",
                {200: _json("InboundSecret", "Rotated; shown only here.")},
                (),
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/test": {
            "post": _op(
                "A test call through the same path as a real one (logged with `test: true`);"
                " the body is optional.",
                {202: _json("InboundTestAccepted", "Accepted.")},
                (403,),
                body="InboundTest",
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/invocations": {
            "get": _op(
                "Calls to an inbound webhook, accepted or refused, newest first.",
                {200: _json("InvocationPage", "A page.")},
                (422,),
                params=[
                    IID,
                    _query("result", {"enum": list(INBOUND_RESULTS)}, "the call's result"),
                    _query("since", TIME, "received at or after"),
                    _query("until", TIME, "received before"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        "page size",
                    ),
                    _query("cursor", STR, "`next_cursor` of the previous page (opaque)"),
                ],
                tag="inbound",
            ),
        },
        "/api/v1/orgs/{org}/limits": {
            "get": _op(
                "An org's limits: as set (null: the default) and in force." + ADMIN,
                {200: _json("Limits", "The limits.")},
                (403,),
                params=[ORG],
                tag="limits",
            ),
            "put": _op(
                "Set an org's limits (every field; null takes the HOOKLINE_* default); in"
                " force on every replica within 5 s." + ADMIN,
                {200: _json("Limits", "Set.")},
                (403,),
                body="LimitsIn",
                params=[ORG],
                tag="limits",
            ),
        },
        "/api/v1/event-types": {
            "get": _op(
                "The event catalog.",
                {200: _json("Catalog", "The catalog.")},
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
            "get": _op(
                "Liveness: always 200.",
                {200: _json("Health", "Alive.")},
                (),
                public=True,
                tag="meta",
            ),
        },
        "/readyz": {
            "get": _op(
                "Readiness: PostgreSQL and Kafka reachable.",
                {200: _json("Health", "Ready.")},
                (503,),
                public=True,
                tag="meta",
            ),
        },
    }


def _with_manage_limits(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Every change an org token makes may answer 429 (HOOKLINE_MANAGE_RATE_PER_ORG)."""
    for item in paths.values():
        for method, op in item.items():
            if method in ("post", "put", "patch", "delete") and "429" not in op["responses"]:
                resp = _json("Error", ERROR_RESPONSES[429])
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
        "paths": _with_manage_limits(_paths()),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
