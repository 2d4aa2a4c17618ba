"""Rate limits that hold across every replica: counts per minute in PostgreSQL.

Each key has a one-minute window that opens with its first call; a call is allowed while
the window's count is within the limit, and the answer to a refused one says when the
window closes. Keys are checked in order and a key refused stops the chain, so a call
refused by a webhook's limit does not spend its org's. The counts live in an unlogged
table on the database's clock: one statement per call, which waits for no WAL flush.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import asyncpg

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


@lru_cache(maxsize=8)
def _statement(n: int) -> str:
    """One statement counting `n` keys in a chain: key i is counted only if key i-1 was
    within its limit. Parameters: key_0, limit_0, key_1, limit_1, ..."""
    ctes = [counted("k0", "$1", "")]
    for i in range(1, n):
        prev = f"k{i - 1}"
        ctes.append(
            counted(f"k{i}", f"${2 * i + 1}", f"FROM {prev} WHERE {prev}.count <= ${2 * i}")
        )
    columns = ", ".join(f"k{i}.count, k{i}.wait" for i in range(n))
    joins = " ".join(f"LEFT JOIN k{i} ON true" for i in range(1, n))
    # The last limit is compared by the caller; named here so that its type is known.
    return f"WITH {', '.join(ctes)} SELECT {columns}, ${2 * n}::int4 FROM k0 {joins}"


class SharedRateLimiter:
    """Counts calls per key per minute in PostgreSQL, shared by every process."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def take(self, limits: Sequence[tuple[str, int]]) -> Refusal | None:
        """Counts one call against each `(key, limit)` in order; None if every one allowed
        it, else the first that refused."""
        if not limits:
            return None
        args: list[object] = []
        for key, limit in limits:
            args += [key, limit]
        row = await self._pool.fetchrow(_statement(len(limits)), *args)
        assert row is not None
        for i, (key, limit) in enumerate(limits):
            count, wait = row[2 * i], row[2 * i + 1]
            if count is not None and count > limit:
                return Refusal(key=key, limit=limit, retry_after=max(1, math.ceil(wait)))
        return None

    async def prune(self) -> int:
        """Forgets windows that closed (a key's next call opens a new one anyway)."""
        done = await self._pool.execute(
            "DELETE FROM rate_limits"
            f" WHERE window_start < statement_timestamp() - interval '{2 * WINDOW_S} seconds'"
        )
        return int(done.split()[-1])
