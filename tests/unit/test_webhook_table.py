"""The in-memory webhook table's memory of deleted webhooks: bounded, newest kept."""

from __future__ import annotations

from shared.core.messages import WebhookRecord
from shared.subscriptions import MAX_DELETED, WebhookTable
from tests.records import webhook_record


def _record(wid: str) -> WebhookRecord:
    return webhook_record(id=wid)


async def test_deleted_ids_are_remembered_up_to_a_bound_newest_first() -> None:
    table = WebhookTable("127.0.0.1:9", client_id="unit")  # never started: no broker
    for n in range(MAX_DELETED + 1000):
        table.remove(f"gone-{n}")
    assert table.deleted() == MAX_DELETED
    # The newest deletions still refuse a late record; the oldest are forgotten.
    assert table.put(_record(f"gone-{MAX_DELETED + 999}")) is False
    assert table.put(_record("gone-0")) is True
