"""The sender against hostile input and slow infrastructure: a URL stored before creation
parsed as the sender does, a resolver that never answers, custom headers, cut response
headers. Runs a sender of its own (the fixtures of test_sender.py)."""

from __future__ import annotations

import uuid

import asyncpg

from services.sender.http import WebhookClient
from shared.config import Settings
from shared.webhooks import WebhookStore
from tests.integration import test_sender as base
from tests.integration.test_sender import Produce, Receiver, Sender, _attempts, _hook

# The sender, its receiver and its topics, as test_sender.py runs them (one per module).
receiver = base.receiver
topics = base.topics
sender_settings = base.sender_settings
sender = base.sender
store = base.store
produce = base.produce


async def test_a_url_the_sender_cannot_parse_is_a_dns_failure_not_an_exception(
    sender_settings: Settings,
) -> None:
    client = WebhookClient(
        sender_settings.allowed_targets, concurrency=4, max_request_bytes=1 << 20
    )
    await client.start()
    try:
        result = await client.post("http://exa\u200bmple.com/", b"{}", {}, timeout_s=2)
    finally:
        await client.close()
    assert (result.error, result.status) == ("dns", None)


async def test_a_stored_url_that_no_longer_parses_is_logged_as_a_failed_attempt(
    sender: Sender,
    receiver: Receiver,
    store: WebhookStore,
    produce: Produce,
    pool: asyncpg.Pool,
    org: str,
) -> None:
    wid, _ = await _hook(
        store, org, receiver.base + f"/ok/{org}", retry={"max_retries": 1, "interval_s": 1}
    )
    # As a webhook created before creation and delivery parsed URLs the same way.
    await pool.execute(
        "UPDATE webhooks SET url = $2 WHERE id = $1", uuid.UUID(wid), "http://exa\u200bmple.com/"
    )
    msg = await produce(wid, org)
    rows = await _attempts(pool, msg.delivery_id, 2)
    assert [(r["attempt"], r["outcome"], r["error"]) for r in rows] == [
        (1, "failed", "dns"),
        (2, "dead", "dns"),
    ]
