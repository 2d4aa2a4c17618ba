"""The shared rate limiter against real PostgreSQL: calls counted in arrival order, the
calls of one key in a batch counted as one item, concurrent calls in one statement."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from shared.ratelimit import SharedRateLimiter


def _key(name: str) -> str:
    return f"test:{name}:{uuid.uuid4().hex[:8]}"


async def test_a_batch_gets_in_up_to_the_limit_in_order_and_the_rest_are_refused(
    pool: asyncpg.Pool,
) -> None:
    limiter = SharedRateLimiter(pool)
    a, b = _key("a"), _key("b")
    calls = [(a, 3), (b, 1), (a, 3), (b, 1), (a, 3), (a, 3), (a, 3)]
    refusals = await limiter.take_many(calls)
    assert [r is None for r in refusals] == [True, True, True, False, True, False, False]
    refused = [r for r in refusals if r is not None]
    assert {r.key for r in refused} == {a, b}
    assert all(r.limit == (3 if r.key == a else 1) and 1 <= r.retry_after <= 60 for r in refused)
    assert await pool.fetchval("SELECT count FROM rate_limits WHERE key = $1", a) == 5
    # The window is shared: the next call, alone, is refused too; another key is not.
    assert (await limiter.take(a, 3)) is not None
    assert await limiter.take(_key("c"), 1) is None


async def test_concurrent_calls_share_statements_and_exactly_the_limit_gets_in(
    pool: asyncpg.Pool,
) -> None:
    limiter = SharedRateLimiter(pool)
    key = _key("burst")
    singles = [limiter.take(key, 10) for _ in range(8)]
    batches = [limiter.take_many([(key, 10)] * 4) for _ in range(3)]
    done = await asyncio.gather(*singles, *batches)
    answers = [*done[:8], *(r for batch in done[8:] for r in batch)]  # type: ignore[union-attr]
    assert len(answers) == 20 and sum(r is None for r in answers) == 10
    assert await pool.fetchval("SELECT count FROM rate_limits WHERE key = $1", key) == 20
