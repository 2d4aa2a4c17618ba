"""Per-org ingest rate limit: a token bucket in process memory.

Each API replica keeps its own buckets, so with N replicas behind a load balancer an org
can send up to N times HOOKLINE_INGEST_RATE_PER_ORG per minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_MAX_BUCKETS = 10_000  # beyond this, full (idle) buckets are forgotten


class IngestLimiter:
    """`rate_per_minute` events per org per minute, with bursts up to one minute's worth."""

    def __init__(
        self, rate_per_minute: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity = float(rate_per_minute)
        self._per_second = rate_per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # org -> (tokens, updated)

    def take(self, org: str) -> float:
        """Spends one token of `org`'s bucket: 0.0 if allowed, else seconds to wait."""
        now = self._clock()
        tokens, updated = self._buckets.get(org, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - updated) * self._per_second)
        if tokens >= 1.0:
            self._buckets[org] = (tokens - 1.0, now)
            self._forget_idle(now)
            return 0.0
        self._buckets[org] = (tokens, now)
        return (1.0 - tokens) / self._per_second

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= _MAX_BUCKETS:
            return
        for org, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self._per_second >= self._capacity:
                del self._buckets[org]
