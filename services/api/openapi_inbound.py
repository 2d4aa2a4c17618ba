"""The OpenAPI paths of inbound webhooks and per-org limits."""

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
from services.api.openapi_schemas import Schema
from shared.core.inbound import RESULTS as INBOUND_RESULTS

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
