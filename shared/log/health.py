"""The webhooks' consecutive-failure counts, kept in the same transaction as the
attempts that change them; the rule that disables a webhook is the core's
(`should_disable`), applied by the sender."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from shared.core.attempts import AttemptRow
from shared.core.health import FailureStreak, health_deltas

_HEALTH_RESET = """
INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at, updated_at)
SELECT w, n, f, now() FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS v(w, n, f)
ON CONFLICT (webhook_id) DO UPDATE SET
    consecutive_failures = EXCLUDED.consecutive_failures,
    first_failure_at = EXCLUDED.first_failure_at,
    updated_at = now()
RETURNING webhook_id, consecutive_failures, first_failure_at
"""

_HEALTH_ADD = """
INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at, updated_at)
SELECT w, n, f, now() FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS v(w, n, f)
ON CONFLICT (webhook_id) DO UPDATE SET
    consecutive_failures = webhook_health.consecutive_failures + EXCLUDED.consecutive_failures,
    first_failure_at = COALESCE(webhook_health.first_failure_at, EXCLUDED.first_failure_at),
    updated_at = now()
RETURNING webhook_id, consecutive_failures, first_failure_at
"""


async def count_failures(
    conn: asyncpg.Connection, rows: Sequence[AttemptRow]
) -> list[FailureStreak]:
    """Folds a batch of attempts into the webhooks' counts (a success resets one) in the
    caller's transaction; returns the streaks of the webhooks failing after it."""
    deltas = health_deltas(rows)
    reset = {w: d for w, d in deltas.items() if d.reset}
    added = {w: d for w, d in deltas.items() if not d.reset and d.failures}
    counts: list[asyncpg.Record] = []
    for sql, part in ((_HEALTH_RESET, reset), (_HEALTH_ADD, added)):
        if part:
            ids = sorted(part)  # a fixed order: no deadlock between replicas
            counts += await conn.fetch(
                sql,
                [uuid.UUID(w) for w in ids],
                [part[w].failures for w in ids],
                [part[w].first_failure_at for w in ids],
            )
    return [
        FailureStreak(str(c["webhook_id"]), c["consecutive_failures"], c["first_failure_at"])
        for c in counts
        if c["consecutive_failures"] > 0 and c["first_failure_at"] is not None
    ]
