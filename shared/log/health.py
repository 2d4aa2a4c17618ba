"""The webhooks' consecutive-failure counts, kept in the same transaction as the
attempts that change them, and the `webhook.failing` notice of a streak reaching its
threshold (written in that transaction too: a replayed batch finds it already told); the
rule that disables a webhook is the core's (`should_disable`), applied by the sender."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from shared.core.attempts import AttemptRow
from shared.core.health import FailureStreak, health_deltas
from shared.notices import emit_notice


def _health_upsert(streak: str) -> str:
    """Folds (webhook, failures, first failure, error) rows into webhook_health, `streak`
    saying how an existing row's streak takes them."""
    return f"""
INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at, updated_at,
                            last_error)
SELECT w, n, f, now(), e
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[]) AS v(w, n, f, e)
ON CONFLICT (webhook_id) DO UPDATE SET
{streak}
    last_error = COALESCE(EXCLUDED.last_error, webhook_health.last_error),
    updated_at = now()
RETURNING webhook_id, consecutive_failures, first_failure_at
"""


# A success starts a new streak, which has not been told about yet.
_HEALTH_RESET = _health_upsert("""\
    consecutive_failures = EXCLUDED.consecutive_failures,
    first_failure_at = EXCLUDED.first_failure_at,
    failing_notified = false,""")

_HEALTH_ADD = _health_upsert("""\
    consecutive_failures = webhook_health.consecutive_failures + EXCLUDED.consecutive_failures,
    first_failure_at = COALESCE(webhook_health.first_failure_at, EXCLUDED.first_failure_at),""")

# The transition to failing: once per streak, for a webhook still active.
_FAILING = """
UPDATE webhook_health h SET failing_notified = true
FROM webhooks w
WHERE h.webhook_id = ANY($1::uuid[]) AND w.id = h.webhook_id AND w.active
  AND h.consecutive_failures >= $2 AND NOT h.failing_notified
RETURNING h.webhook_id, h.consecutive_failures, h.last_error
"""


async def count_failures(
    conn: asyncpg.Connection, rows: Sequence[AttemptRow], *, failing_after: int | None = None
) -> list[FailureStreak]:
    """Folds a batch of attempts into the webhooks' counts (a success resets one) in the
    caller's transaction; returns the streaks of the webhooks failing after it. With
    `failing_after`, a streak reaching that many failures emits its `webhook.failing`."""
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
                [part[w].last_error for w in ids],
            )
    failing = [c["webhook_id"] for c in counts if c["consecutive_failures"] > 0]
    if failing_after is not None and failing:
        for told in await conn.fetch(_FAILING, failing, failing_after):
            n = told["consecutive_failures"]
            await emit_notice(
                conn,
                kind="failing",
                webhook_id=str(told["webhook_id"]),
                reason=f"{n} consecutive failed attempts",
                failure_count=n,
                last_error=told["last_error"],
            )
    return [
        FailureStreak(str(c["webhook_id"]), c["consecutive_failures"], c["first_failure_at"])
        for c in counts
        if c["consecutive_failures"] > 0 and c["first_failure_at"] is not None
    ]
