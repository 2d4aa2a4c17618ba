"""Rows of the delivery log written straight into PostgreSQL, as the sender would write
them, for tests of what reads the log (the API, the console, the CLI)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


def delivery_of(
    webhook: dict[str, Any], delivery_id: uuid.UUID, event_id: str, event_type: str
) -> dict[str, Any]:
    """The columns a delivery's summary and each of its attempts share."""
    return {
        "delivery_id": delivery_id,
        "webhook_id": uuid.UUID(webhook["id"]),
        "org": webhook["scope"]["org"],
        "event_id": event_id,
        "event_type": event_type,
    }


async def insert(pool: asyncpg.Pool, table: str, row: dict[str, Any]) -> None:
    """INSERT one row: its keys are the columns."""
    columns = ", ".join(row)
    params = ", ".join(f"${n}" for n in range(1, len(row) + 1))
    await pool.execute(f"INSERT INTO {table} ({columns}) VALUES ({params})", *row.values())


async def insert_summary(pool: asyncpg.Pool, attempt: dict[str, Any], **summary: Any) -> None:
    """The `deliveries` row of the delivery `attempt` (a `delivery_of` row) belongs to."""
    row = {k: v for k, v in attempt.items() if k != "delivery_id"}
    await insert(pool, "deliveries", {"id": attempt["delivery_id"], **row, **summary})
