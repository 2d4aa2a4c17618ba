"""The one place attempt numbers are given out: two attempts of one delivery never share
a number, whether a sender repeats it or the API redelivers it. The summary row's
`attempts` is the highest number logged or given out, taken under that row's lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.core.attempts import AttemptRow
from shared.db import translated

from .writer import delivery_columns

# The number of a repeat attempt: one more than any given out or logged, at least what
# the message asked for.
_NUMBER_ATTEMPT = (
    "UPDATE deliveries SET attempts = GREATEST(attempts + 1, $2) WHERE id = $1 RETURNING attempts"
)
# Marks each redelivered delivery pending and reserves its attempt number the same way.
_RESERVE_RESEND = (
    "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
    " first_at, last_at, next_attempt_at)"
    " SELECT id, w, o, e, t, 'pending', logged + 1, f, l, now()"
    " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[],"
    " $7::timestamptz[], $8::timestamptz[]) AS v(id, w, o, e, t, logged, f, l)"
    " ON CONFLICT (id) DO UPDATE SET status = 'pending', next_attempt_at = now(),"
    " attempts = GREATEST(deliveries.attempts + 1, EXCLUDED.attempts)"
    " RETURNING id, attempts"
)


class AttemptNumbers:
    """Numbers for a sender's repeat attempts (retries, redeliveries not numbered yet)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translated
    async def next(self, delivery_id: str, at_least: int) -> int:
        """The number for a repeat attempt of a delivery; `at_least` when the delivery
        has no summary row yet."""
        number = await self._pool.fetchval(_NUMBER_ATTEMPT, uuid.UUID(delivery_id), at_least)
        return at_least if number is None else int(number)


@dataclass(frozen=True)
class Resend:
    """A logged delivery to send again: what names it, its highest logged attempt, and
    when its first and last attempts started."""

    delivery: AttemptRow  # any of its attempts: the naming columns are the same in all
    logged: int
    first_at: datetime
    last_at: datetime


async def reserve_resends(conn: asyncpg.Connection, resends: Sequence[Resend]) -> dict[str, int]:
    """Marks each delivery pending and reserves the number of its next attempt, in the
    caller's transaction; by delivery id."""
    reserved = await conn.fetch(
        _RESERVE_RESEND,
        *delivery_columns([r.delivery for r in resends]),
        [r.logged for r in resends],
        [r.first_at for r in resends],
        [r.last_at for r in resends],
    )
    return {str(r["id"]): r["attempts"] for r in reserved}
