"""The console's part in notices: Notify email on the form (the API's validation), the
health facts on a webhook's page, and Enable emitting `webhook.enabled`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from shared.config import Settings
from shared.kafka import EVENTS
from tests.integration.api_support import bearer, make_webhook, org_token, outbox_rows
from tests.integration.console_support import sign_in


@pytest.fixture
async def client(provisioned: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(provisioned))) as c:
        yield c


async def test_notify_email_health_and_enable_through_the_console(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token = (await org_token(client, provisioned, org))["Authorization"].split()[1]
    csrf = await sign_in(client, token)
    hook = await make_webhook(client, bearer(token), org, events=["push"])
    page = f"/console/webhooks/{hook['id']}"
    form = {
        "csrf": csrf,
        "url": hook["url"],
        "events": "push",
        "timeout_s": "10",
        "content_type": "json",
        "active": "on",
        "description": "",
    }
    refused = await client.post(page + "/edit", data={**form, "notify_email": "nobody"})
    assert refused.status == 422
    assert 'id="notify_email-error"' in await refused.text()
    saved = await client.post(page + "/edit", data={**form, "notify_email": "ops@example.com"})
    assert saved.status == 200
    got = await (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=bearer(token))).json()
    assert got["notify_email"] == "ops@example.com"
    text = await (await client.get(page)).text()
    assert "Failures in a row" in text and "ops@example.com" in text
    assert 'value="ops@example.com"' in await (await client.get(page + "/edit")).text()

    off = await (await client.post(page + "/disable", data={"csrf": csrf})).text()
    assert "This webhook is disabled" in off and "Disabled " in off
    await client.post(page + "/enable", data={"csrf": csrf})
    kinds = [r["type"] for r in await outbox_rows(pool, EVENTS, org)]
    assert kinds == ["webhook.enabled"]
