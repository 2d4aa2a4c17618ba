"""The OpenAPI paths of inbound webhooks and per-org limits."""

from __future__ import annotations

from services.api.openapi_ops import (
    ADMIN,
    NO_CONTENT,
    ORG,
    REPO,
    json_content,
    operation,
    path_param,
    query_param,
)
from services.api.openapi_schemas import STR, TIME, Schema
from shared.core.inbound import RESULTS as INBOUND_RESULTS

IID = path_param("id", "inbound webhook id")


def inbound_paths() -> dict[str, Schema]:
    ih_ok = {
        201: json_content(
            "InboundWebhookWithSecret", "Created; the secret is shown only here and on rotate."
        )
    }
    ih_list = {200: json_content("InboundList", "Inbound webhooks, never with secrets.")}
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
        "/api/v1/repos/{org}/{repo}/inbound-webhooks": {
            "post": operation(
                "Create a repo inbound webhook: a URL external systems call to emit events.",
                ih_ok,
                (409,),
                body="InboundCreate",
                params=[ORG, REPO],
                tag="inbound",
            ),
            "get": operation(
                "List a repo's inbound webhooks.", ih_list, (), params=[ORG, REPO], tag="inbound"
            ),
        },
        "/api/v1/orgs/{org}/inbound-webhooks": {
            "post": operation(
                "Create an org-level inbound webhook (its calls emit org events).",
                ih_ok,
                (409,),
                body="InboundCreate",
                params=[ORG],
                tag="inbound",
            ),
            "get": operation(
                "List an org's org-level inbound webhooks.",
                ih_list,
                (),
                params=[ORG],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}": {
            "get": operation(
                "Read an inbound webhook.",
                {200: json_content("InboundWebhook", "The inbound webhook.")},
                (),
                params=[IID],
                tag="inbound",
            ),
            "patch": operation(
                "Change an inbound webhook (`active: false` refuses calls; the URL stays).",
                {200: json_content("InboundWebhook", "Updated.")},
                (),
                body="InboundPatch",
                params=[IID],
                tag="inbound",
            ),
            "delete": operation(
                "Delete an inbound webhook: its URL answers 404 for good.",
                {204: NO_CONTENT},
                (),
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/rotate-secret": {
            "post": operation(
                "A new secret, in force at once.",
                {200: json_content("InboundSecret", "Rotated; shown only here.")},
                (),
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/test": {
            "post": operation(
                "A test call through the same path as a real one (logged with `test: true`);"
                " the body is optional.",
                {202: json_content("InboundTestAccepted", "Accepted.")},
                (403,),
                body="InboundTest",
                params=[IID],
                tag="inbound",
            ),
        },
        "/api/v1/inbound-webhooks/{id}/invocations": {
            "get": operation(
                "Calls to an inbound webhook, accepted or refused, newest first.",
                {200: json_content("InvocationPage", "A page.")},
                (422,),
                params=[
                    IID,
                    query_param("result", {"enum": list(INBOUND_RESULTS)}, "the call's result"),
                    query_param("since", TIME, "received at or after"),
                    query_param("until", TIME, "received before"),
                    query_param(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        "page size",
                    ),
                    query_param("cursor", STR, "`next_cursor` of the previous page (opaque)"),
                ],
                tag="inbound",
            ),
        },
        "/api/v1/orgs/{org}/limits": {
            "get": operation(
                "An org's limits: as set (null: the default) and in force." + ADMIN,
                {200: json_content("Limits", "The limits.")},
                (403,),
                params=[ORG],
                tag="limits",
            ),
            "put": operation(
                "Set an org's limits (every field; null takes the HOOKLINE_* default); in"
                " force on every replica within 5 s." + ADMIN,
                {200: json_content("Limits", "Set.")},
                (403,),
                body="LimitsIn",
                params=[ORG],
                tag="limits",
            ),
        },
    }
