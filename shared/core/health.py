"""A webhook's health, pure: how a batch of attempts changes its consecutive-failure
count, and the rule that disables it (DESIGN.md section 7)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .attempts import AttemptRow

__all__ = [
    "FailureStreak",
    "HealthDelta",
    "describe_failure",
    "health_deltas",
    "should_disable",
]


@dataclass(frozen=True)
class HealthDelta:
    """A batch's effect on a webhook's consecutive-failure count: `reset` when a success
    was seen (the count restarts at `failures`, those after the last success)."""

    reset: bool
    failures: int
    first_failure_at: datetime | None
    last_error: str | None = None  # the newest failure, described (`http_status 500`)


def health_deltas(rows: Iterable[AttemptRow]) -> dict[str, HealthDelta]:
    """Folds attempts, in order, into per-webhook changes; skipped attempts do not count."""
    out: dict[str, HealthDelta] = {}
    for row in rows:
        held = out.get(row.webhook_id, HealthDelta(False, 0, None))
        if row.outcome == "succeeded":
            out[row.webhook_id] = HealthDelta(True, 0, None)
        elif row.counts_as_failure:
            first = held.first_failure_at or row.started_at
            out[row.webhook_id] = HealthDelta(
                held.reset, held.failures + 1, first, describe_failure(row)
            )
    return out


def describe_failure(row: AttemptRow) -> str | None:
    """A failed attempt's error as notices show it: `http_status 503`, `timeout`."""
    if row.error == "http_status" and row.response_status is not None:
        return f"http_status {row.response_status}"
    return row.error


@dataclass(frozen=True)
class FailureStreak:
    """A webhook's consecutive failed attempts as the log counted them, and when the
    first of them started."""

    webhook_id: str
    failures: int
    first_failure_at: datetime


def should_disable(
    streak: FailureStreak, *, now: datetime, max_failures: int, max_span: timedelta
) -> bool:
    """The disabling rule (DESIGN.md section 7): at least `max_failures` consecutive
    failures, the first of them at least `max_span` ago."""
    return streak.failures >= max_failures and now - streak.first_failure_at >= max_span
