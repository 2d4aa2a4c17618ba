"""The OpenAPI document covers every route, and the API conforms to it (schemathesis)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

from services.api.app import create_app
from services.api.auth import CONSOLE_PREFIX
from services.api.openapi import openapi_document
from shared.config import Settings
from tests.integration.api_support import api_client, make_webhook, org_token
from tests.integration.test_api_deliveries import log_delivery


def test_every_route_is_documented_and_every_documented_route_exists(
    settings: Settings,
) -> None:
    doc = openapi_document()
    routed = {
        (route.resource.canonical, route.method.lower())
        for route in create_app(settings).router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp adds HEAD to GET
        # The web console's HTML pages are not API: they are left out of the document.
        and not route.resource.canonical.startswith(CONSOLE_PREFIX + "/")
    }
    assert any(path.startswith(CONSOLE_PREFIX + "/") for path, _ in _all_routes(settings))
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routed == documented
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (path, method)
            if op.get("security") != []:
                assert "401" in op["responses"], (path, method)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= set(op["responses"]), (path, method)


def test_every_route_with_a_token_may_answer_503_unavailable_with_retry_after() -> None:
    """Every route behind a token reads PostgreSQL (the token itself, at least): while it
    is unreachable or starting up, the answer is 503 `unavailable` with Retry-After."""
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if op.get("security") == []:
                continue
            unavailable = op["responses"].get("503")
            assert unavailable is not None, (path, method)
            assert unavailable["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            assert "Retry-After" in unavailable["headers"], (path, method)
    # Readiness answers 503 in its own shape, naming what is down.
    ready = doc["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }


async def test_served_document_is_the_built_one(provisioned: Settings) -> None:
    async with api_client(provisioned) as client:
        resp = await client.get("/api/v1/openapi.json")
        assert resp.status == 200 and await resp.json() == openapi_document()


def _all_routes(settings: Settings) -> set[tuple[str, str]]:
    return {
        (route.resource.canonical, route.method)
        for route in create_app(settings).router.routes()
        if route.resource is not None
    }


def _checker(
    operation: Any, headers: dict[str, str], org: str, real_ids: list[str]
) -> Callable[[], None]:
    """A Hypothesis test of one operation: generated requests, checked against the doc."""

    @hypothesis.given(case=operation.as_strategy(), use_real=st.booleans(), pick=st.integers(0, 9))
    @hypothesis.settings(
        max_examples=int(os.environ.get("HOOKLINE_SCHEMATHESIS_EXAMPLES", "15")),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any, use_real: bool, pick: int) -> None:
        params = case.path_parameters or {}
        if use_real:  # reach the success paths too, not only 404s
            if "org" in params:
                params["org"] = org
            if "id" in params:
                params["id"] = real_ids[pick % len(real_ids)]
        case.call_and_validate(headers=headers)

    return check  # type: ignore[no-any-return]


def _run_schemathesis(
    base_url: str, headers: dict[str, str], ids: dict[str, list[str]], org: str
) -> list[str]:
    """Every operation, a bounded number of generated examples each; returns failures."""
    schemathesis.experimental.OPEN_API_3_1.enable()
    schema = schemathesis.from_dict(openapi_document(), base_url=base_url)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        operations += 1
        kind = "webhook"
        if "/deliveries/{id}" in operation.path:
            kind = "delivery"
        elif operation.path.startswith("/api/v1/inbound-webhooks/"):
            kind = "inbound"
        real_ids = ids[kind]
        try:
            _checker(operation, headers, org, real_ids)()
        except Exception as exc:  # collect all operations' failures, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations == sum(len(item) for item in openapi_document()["paths"].values())
    return failures


@pytest.mark.timeout(240)
async def test_api_conforms_to_its_document(
    provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    async with api_client(provisioned) as client:
        headers = await org_token(client, provisioned, org)
        webhooks = [await make_webhook(client, headers, org, repo=f"r{i}") for i in range(3)]
        deliveries = [
            await log_delivery(pool, w, status="failed", at=datetime.now(UTC)) for w in webhooks
        ]
        inbound = []
        for i in range(3):
            resp = await client.post(
                f"/api/v1/repos/{org}/r{i}/inbound-webhooks", json={"name": "ci"}, headers=headers
            )
            inbound.append((await resp.json())["id"])
        ids = {
            "webhook": [w["id"] for w in webhooks] + [str(uuid.uuid4())],
            "delivery": deliveries,
            "inbound": [*inbound, "ih_unknown"],
        }
        base_url = str(client.server.make_url("/")).rstrip("/")
        # schemathesis calls the API synchronously (requests): run it off the loop serving it.
        failures = await asyncio.to_thread(_run_schemathesis, base_url, headers, ids, org)
    assert not failures, "\n\n".join(failures)
