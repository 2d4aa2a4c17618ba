"""Health probes, the catalog, and the error of last resort."""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestClient

from services.api.keys import TOKENS
from shared.config import Settings
from shared.core.events import EVENT_TYPES
from tests.integration.api_support import api_client, error_of


async def test_healthz_and_readyz(api: TestClient) -> None:
    assert (await api.get("/healthz")).status == 200
    resp = await api.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "database": True, "kafka": True}


async def test_readyz_is_503_when_kafka_is_unreachable(provisioned: Settings) -> None:
    broken = dataclasses.replace(provisioned, kafka_bootstrap="127.0.0.1:1")
    async with api_client(broken) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["kafka"] is False
        assert (await client.get("/healthz")).status == 200


async def test_event_types_is_the_catalog(api: TestClient) -> None:
    resp = await api.get("/api/v1/event-types")
    assert resp.status == 200
    body = await resp.json()
    assert [t["type"] for t in body["event_types"]] == list(EVENT_TYPES)
    assert body["families"]["pull_request"][0] == "opened"


async def test_unexpected_exception_is_500_without_a_trace(provisioned: Settings) -> None:
    async with api_client(provisioned) as client:

        async def boom() -> None:
            raise RuntimeError("secret internals")

        # Swap a store method for one that fails unexpectedly.
        client.app[TOKENS].create = lambda body: boom()  # type: ignore[method-assign]
        resp = await client.post(
            "/api/v1/tokens",
            json={"org": "a", "name": "b"},
            headers={"Authorization": f"Bearer {provisioned.admin_token}"},
        )
        error = await error_of(resp, 500)
        assert error["code"] == "internal" and "secret internals" not in error["message"]
