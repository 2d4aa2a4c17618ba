"""A webhook's delivery counts by status, kept as the summary table changes (migration
0013): triggers append deltas, `fold` moves them into `delivery_counts`, and a count is
the sum of both tables' rows for the webhook, so reading it costs the deltas since the
last fold, not the webhook's deliveries."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from shared.core.errors import is_retryable
from shared.db import translated
from shared.runtime import sleep_or_stop

log = structlog.get_logger(component="delivery_counts")

FOLD_INTERVAL_S = 5.0
# Any fixed number: one replica folds at a time (another one skips its turn).
_FOLD_LOCK = 0x686C636E

# Rows inserted by transactions that commit after the DELETE's snapshot are not deleted:
# they stay for the next fold, so no delta is lost or counted twice.
_FOLD = """
WITH moved AS (DELETE FROM delivery_count_deltas RETURNING webhook_id, status, n)
INSERT INTO delivery_counts (webhook_id, status, n)
SELECT webhook_id, status, sum(n) FROM moved GROUP BY 1, 2
ON CONFLICT (webhook_id, status) DO UPDATE SET n = delivery_counts.n + EXCLUDED.n
RETURNING webhook_id, status, n
"""
# Totals folded to zero (every delivery gone with retention) are dropped.
_DROP_ZEROS = (
    "DELETE FROM delivery_counts c USING unnest($1::uuid[], $2::text[]) AS z(w, s)"
    " WHERE c.webhook_id = z.w AND c.status = z.s AND c.n = 0"
)
COUNTS = (
    "SELECT status, sum(n)::bigint AS n FROM (SELECT status, n FROM delivery_counts"
    " WHERE webhook_id = $1 UNION ALL SELECT status, n FROM delivery_count_deltas"
    " WHERE webhook_id = $1) c GROUP BY status"
)


async def counts(conn: asyncpg.Connection, webhook_id: object) -> dict[str, int]:
    """The webhook's number of deliveries per status (statuses with none are absent)."""
    return {r["status"]: r["n"] for r in await conn.fetch(COUNTS, webhook_id) if r["n"]}


@translated
async def fold(pool: asyncpg.Pool) -> bool:
    """Moves the pending deltas into the totals; False if another replica is folding."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _FOLD_LOCK):
            return False
        zeros = [(r["webhook_id"], r["status"]) for r in await conn.fetch(_FOLD) if not r["n"]]
        if zeros:
            await conn.execute(_DROP_ZEROS, *map(list, zip(*zeros, strict=True)))
    return True


async def fold_forever(
    pool: asyncpg.Pool, stop: asyncio.Event, *, interval_s: float = FOLD_INTERVAL_S
) -> None:
    """`fold` every `interval_s` until `stop` is set; failures are logged, never raised."""
    while not await sleep_or_stop(stop, interval_s):
        try:
            await fold(pool)
        except Exception as exc:  # the next turn tries again; counts stay exact meanwhile
            log.warning("delivery count fold failed", error=repr(exc), outage=is_retryable(exc))
