"""Rate limits that hold across every replica: counts per minute in PostgreSQL.

Each key has a one-minute window that opens with its first call; a call is allowed while
the window's count is within the limit, and the answer to a refused one says when the
window closes. Keys are checked in order and a key refused stops the chain, so a call
refused by a webhook's limit does not spend its org's. The counts live in an unlogged
table on the database's clock: one statement per call, which waits for no WAL flush.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from shared import metrics
from shared.batching import SessionBatcher

WINDOW_S = 60
_CAP = 1_000_000_000  # counts stop growing here


@dataclass(frozen=True)
class Refusal:
    """The key that refused, and whole seconds until its window closes (at least 1)."""

    key: str
    limit: int
    retry_after: int


def counted(name: str, key: str, source: str, n: str = "1") -> str:
    """A CTE `name` adding `n` calls (an SQL expression) to the window of the key the SQL
    expression `key` gives, for each row of `source` (a FROM clause, keys distinct); it
    returns `key`, the window's `count` after them and `wait` (seconds until it closes)."""
    fresh = f"r.window_start <= statement_timestamp() - interval '{WINDOW_S} seconds'"
    return (
        f"{name} AS (INSERT INTO rate_limits AS r (key, window_start, count)"
        f" SELECT {key}, statement_timestamp(), {n} {source}"
        f" ON CONFLICT (key) DO UPDATE SET"
        f" window_start = CASE WHEN {fresh} THEN statement_timestamp() ELSE r.window_start END,"
        f" count = CASE WHEN {fresh} THEN EXCLUDED.count"
        f" ELSE least(r.count + EXCLUDED.count, {_CAP}) END"
        f" RETURNING key, count,"
        f" extract(epoch FROM window_start + interval '{WINDOW_S} seconds'"
        f" - statement_timestamp())::float8 AS wait)"
    )


# A batch of calls: $1 distinct keys, $2 calls to each.
_TAKE = (
    "WITH q AS (SELECT * FROM unnest($1::text[], $2::int4[]) AS q(key, n)), "
    + counted("k", "q.key", "FROM q", n="q.n")
    + " SELECT key, count, wait FROM k"
)


class SharedRateLimiter:
    """Counts calls per key per minute in PostgreSQL, shared by every process; concurrent
    calls are counted in one statement (shared/batching.py)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # Items are (key, calls); each answer is (the window's count before those calls,
        # seconds until it closes).
        self._batcher: SessionBatcher[asyncpg.Connection, tuple[str, int], tuple[int, float]] = (
            SessionBatcher(pool.acquire, self._take_many)
        )

    async def take(self, key: str, limit: int) -> Refusal | None:
        """Counts one call against `key`: None if within `limit` a minute, else when to
        come back."""
        (refusal,) = await self.take_many([(key, limit)])
        return refusal

    async def take_many(self, calls: Sequence[tuple[str, int]]) -> list[Refusal | None]:
        """`take` for each (key, limit) of `calls`, in order, counted together: the calls
        of one key go as one item with their number (a batch of 500 events of one org was
        500 futures for one row)."""
        counts = Counter(calls)
        answers = await self._batcher.submit_many([(key, n) for (key, _), n in counts.items()])
        before = dict(zip(counts, answers, strict=True))
        taken: Counter[tuple[str, int]] = Counter()
        out: list[Refusal | None] = []
        for call in calls:  # in arrival order: the first calls of a window get in
            key, limit = call
            taken[call] += 1
            count, wait = before[call]
            if count + taken[call] > limit:
                out.append(Refusal(key=key, limit=limit, retry_after=max(1, math.ceil(wait))))
                metrics.rate_limited(key)
            else:
                out.append(None)
        return out

    async def _take_many(
        self, conn: asyncpg.Connection, items: Sequence[tuple[str, int]]
    ) -> list[tuple[int, float]]:
        per_key: Counter[str] = Counter()
        for key, n in items:
            per_key[key] += n
        rows = await conn.fetch(_TAKE, list(per_key), list(per_key.values()))
        after = {r["key"]: (r["count"], r["wait"]) for r in rows}
        seen: Counter[str] = Counter()
        out: list[tuple[int, float]] = []
        for key, n in items:  # in order: earlier items' calls come first in the window
            count, wait = after[key]
            out.append((count - per_key[key] + seen[key], wait))
            seen[key] += n
        return out

    async def prune(self) -> int:
        """Forgets windows that closed (a key's next call opens a new one anyway)."""
        done = await self._pool.execute(
            "DELETE FROM rate_limits"
            f" WHERE window_start < statement_timestamp() - interval '{2 * WINDOW_S} seconds'"
        )
        return int(done.split()[-1])
