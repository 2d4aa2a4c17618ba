"""Retry schedules as data (DESIGN.md section 6) and the fixed delay-topic tiers.

Pure: the caller passes the random number used for jitter and the current time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import ValidationError

__all__ = [
    "DEFAULT_SCHEDULE",
    "JITTER",
    "MAX_DELAY_S",
    "MAX_RETRIES",
    "MAX_RETRY_AFTER_S",
    "MIN_DELAY_S",
    "RETRY_TIERS",
    "RetryPolicy",
    "RetryTier",
    "parse_retry_after",
    "retry_topics",
    "tier_for",
    "tier_for_topic",
]

# Delays in seconds before attempts 2..6: 1 min, 5 min, 30 min, 2 h, 6 h.
DEFAULT_SCHEDULE: tuple[int, ...] = (60, 300, 1800, 7200, 21600)
MIN_DELAY_S = 1
MAX_DELAY_S = 86400
MAX_RETRIES = 20
# A subscriber's Retry-After can push a retry later, but never past this.
MAX_RETRY_AFTER_S = 21600
# Each delay is spread uniformly over base * [1 - JITTER, 1 + JITTER).
JITTER = 0.1

_SCHEDULE_KEYS = frozenset({"schedule"})
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_INTERVAL_KEYS = frozenset({"max_retries", "interval_s"})


def _is_number(value: object) -> bool:
    # bool is an int subclass; `true` as a delay is a client bug, not 1 second.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_delay(value: object, field: str, label: str) -> float:
    if not _is_number(value):
        raise ValidationError(f"{label} must be a number of seconds, got {value!r}", field=field)
    assert isinstance(value, int | float)
    if not math.isfinite(value) or not MIN_DELAY_S <= value <= MAX_DELAY_S:
        raise ValidationError(
            f"{label} must be between {MIN_DELAY_S} and {MAX_DELAY_S} seconds, got {value!r}",
            field=field,
        )
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """A webhook's retry schedule: ``schedule[i]`` is the delay after attempt ``i + 1`` failed."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE

    @property
    def max_attempts(self) -> int:
        """Total attempts, the first one included."""
        return len(self.schedule) + 1

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> RetryPolicy:
        """Build a policy from a webhook's ``retry`` field, raising 422 on a bad value.

        Accepts None (the default schedule), ``{"schedule": [seconds, ...]}`` or
        ``{"max_retries": n, "interval_s": s}``; delays 1 s - 24 h, at most 20 retries.
        """
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            raise ValidationError(
                'retry must be {"schedule": [...]} or {"max_retries": n, "interval_s": s}',
                field="retry",
            )
        keys = frozenset(cfg)
        if keys == _SCHEDULE_KEYS:
            return cls(schedule=cls._parse_schedule(cfg["schedule"]))
        if keys and keys <= _INTERVAL_KEYS:
            return cls(schedule=cls._parse_interval(cfg))
        unknown = sorted(keys - _SCHEDULE_KEYS - _INTERVAL_KEYS)
        if unknown:
            detail = f"unknown key(s) {', '.join(map(repr, unknown))}"
        elif not keys:
            detail = "an empty object"
        else:
            detail = "both a schedule and max_retries/interval_s"
        raise ValidationError(
            f'retry has {detail}; use {{"schedule": [...]}} or '
            '{"max_retries": n, "interval_s": s}',
            field="retry",
        )

    @staticmethod
    def _parse_schedule(raw: object) -> tuple[float, ...]:
        field = "retry.schedule"
        if not isinstance(raw, list):
            raise ValidationError("retry.schedule must be a list of delays in seconds", field=field)
        if len(raw) > MAX_RETRIES:
            raise ValidationError(
                f"retry.schedule allows at most {MAX_RETRIES} retries, got {len(raw)}", field=field
            )
        return tuple(_check_delay(v, field, f"retry.schedule[{i}]") for i, v in enumerate(raw))

    @staticmethod
    def _parse_interval(cfg: dict[str, Any]) -> tuple[float, ...]:
        if "max_retries" not in cfg:
            raise ValidationError("retry.max_retries is required", field="retry.max_retries")
        n = cfg["max_retries"]
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_RETRIES:
            raise ValidationError(
                f"retry.max_retries must be an integer from 0 to {MAX_RETRIES}, got {n!r}",
                field="retry.max_retries",
            )
        if "interval_s" not in cfg:
            raise ValidationError("retry.interval_s is required", field="retry.interval_s")
        interval = _check_delay(cfg["interval_s"], "retry.interval_s", "retry.interval_s")
        return (interval,) * n

    def to_config(self) -> dict[str, Any]:
        """Return the policy as the API's ``retry`` field (always the schedule form)."""
        return {"schedule": list(self.schedule)}

    def delay_after(
        self, attempt: int, *, rand: float, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None if attempts are exhausted.

        ``attempt`` is the 1-based number of the attempt that just failed. ``rand`` in
        [0, 1) gives ±10 % jitter. A ``retry_after`` (seconds, from a 429/503) is
        honoured, clamped to [jittered scheduled delay, 6 h]: it can only make the wait
        longer, never shorter than the schedule.
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        if not 0.0 <= rand <= 1.0:
            raise ValueError(f"rand must be in [0, 1), got {rand}")
        if attempt >= self.max_attempts:
            return None
        base = self.schedule[attempt - 1]
        delay = base * (1.0 - JITTER + 2 * JITTER * rand)
        if retry_after is not None and math.isfinite(retry_after):
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay

    def next_attempt_at(
        self,
        attempt: int,
        *,
        now: datetime,
        rand: float,
        retry_after: float | None = None,
    ) -> datetime | None:
        """When attempt ``attempt + 1`` is due, or None if attempts are exhausted."""
        delay = self.delay_after(attempt, rand=rand, retry_after=retry_after)
        return None if delay is None else now + timedelta(seconds=delay)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Parse a ``Retry-After`` header (delta-seconds or HTTP-date) into seconds from ``now``,
    at most ``MAX_RETRY_AFTER_S``.

    Never raises: what a subscriber sends is not ours to trust. None for a missing or
    unparseable value (``²``, ``-5``, ``1e9``, a date no calendar holds); a date in the
    past gives 0; 400 digits or the year 9999 give the maximum.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        # ASCII digits only (str.isdigit() also says yes to "²"); past the clamp, the
        # number's size does not matter, and int() of 5,000 digits would raise.
        digits = text.lstrip("0") or "0"
        return float(min(int(digits), MAX_RETRY_AFTER_S)) if len(digits) <= 9 else MAX_RETRY_AFTER_S
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), float(MAX_RETRY_AFTER_S))


@dataclass(frozen=True)
class RetryTier:
    """A fixed-delay Kafka topic a delivery waits in before its next hop or attempt."""

    name: str
    delay_s: float

    @property
    def topic(self) -> str:
        """The tier's Kafka topic, e.g. ``hookline.retry.5m``."""
        return f"hookline.retry.{self.name}"


RETRY_TIERS: tuple[RetryTier, ...] = (
    RetryTier("1s", 1),
    RetryTier("5s", 5),
    RetryTier("30s", 30),
    RetryTier("1m", 60),
    RetryTier("5m", 300),
    RetryTier("30m", 1800),
    RetryTier("2h", 7200),
)

_TIERS_BY_TOPIC: dict[str, RetryTier] = {tier.topic: tier for tier in RETRY_TIERS}


def tier_for(remaining_s: float) -> RetryTier | None:
    """Pick the tier a delivery due in ``remaining_s`` seconds should wait in next.

    The largest tier not longer than the remaining delay; the 1 s tier when less than a
    second remains; None when the delivery is due now (send it at once). Every hop but
    that last short one ends no later than ``due_at``; a tier's consumer still checks
    ``due_at`` before sending, so a delivery is never early and the 1 s tier makes it at
    most 1 s late.
    """
    if remaining_s <= 0:
        return None
    chosen = RETRY_TIERS[0]
    for tier in RETRY_TIERS:
        if tier.delay_s <= remaining_s:
            chosen = tier
        else:
            break
    return chosen


def tier_for_topic(topic: str) -> RetryTier | None:
    """Return the tier whose topic is ``topic``, or None."""
    return _TIERS_BY_TOPIC.get(topic)


def retry_topics() -> tuple[str, ...]:
    """Every retry tier's topic, shortest delay first."""
    return tuple(tier.topic for tier in RETRY_TIERS)
