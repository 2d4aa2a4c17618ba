"""One delivery attempt, pure: the request a subscriber receives, how its result is
classified, what happens next, and the row the delivery log keeps (DESIGN.md 4, 6, 7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from .retry import RetryPolicy, parse_retry_after
from .signing import signature_headers

__all__ = [
    "BODY_CUT",
    "ERROR_CLASSES",
    "OUTCOMES",
    "AttemptResult",
    "AttemptRow",
    "Decision",
    "FailureStreak",
    "HealthDelta",
    "build_request",
    "clean_headers",
    "clean_text",
    "cut_text",
    "decide",
    "delivery_status",
    "health_deltas",
    "should_disable",
]

ERROR_CLASSES = ("http_status", "timeout", "connect", "dns", "tls", "blocked", "too_large")
OUTCOMES = ("succeeded", "failed", "dead", "skipped")
# Response bodies (and anything shown back) are kept up to this many bytes.
BODY_CUT = 16 * 1024
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP POST gave: a status, or an error class (never both missing)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    resolved_ip: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Decision:
    """What follows an attempt: its outcome, the delay before the next one (if any),
    whether the delivery is copied to the dead-letter topic, and whether the webhook is
    disabled at once (with the reason)."""

    outcome: str
    error: str | None
    next_delay_s: float | None = None
    to_dlq: bool = False
    disable_reason: str | None = None


def decide(
    result: AttemptResult,
    *,
    attempt: int,
    single: bool,
    policy: RetryPolicy,
    rand: float,
    now: datetime,
) -> Decision:
    """Classifies a result and schedules what follows it.

    2xx is `succeeded`. A failure is retried per the webhook's policy (a Retry-After on
    429/503 can only lengthen the wait) with outcome `failed`; with no attempt left it is
    `dead` and goes to the dead-letter topic. A `single` attempt (manual, recover, ping)
    is never retried: a failure is `failed` with nothing scheduled. `410 Gone` means the
    endpoint is gone for good: `dead` at once, and the webhook is disabled.
    """
    if result.ok:
        return Decision("succeeded", None)
    error = result.error or "http_status"
    if result.status == 410:
        return Decision(
            "failed" if single else "dead",
            error,
            to_dlq=not single,
            disable_reason="endpoint answered 410 Gone",
        )
    if single:
        return Decision("failed", error)
    retry_after = None
    if result.status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(_header(result.headers, "retry-after"), now=now)
    delay = policy.delay_after(attempt, rand=rand, retry_after=retry_after)
    if delay is None:
        return Decision("dead", error, to_dlq=True)
    return Decision("failed", error, next_delay_s=delay)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def delivery_status(outcome: str, next_attempt_at: datetime | None) -> str:
    """A delivery's status after an attempt with this outcome (DESIGN.md section 7).

    `failed` means the last attempt failed (with or without one scheduled: see
    `next_attempt_at`); `pending` is never derived from an attempt, it is a delivery
    queued with no attempt recorded yet. The log writer keeps a `dead` delivery dead when
    a later single (manual) attempt fails too.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    return outcome


def build_request(
    *,
    body: Mapping[str, Any],
    content_type: str,
    prefix: str,
    user_agent: str,
    event_type: str,
    delivery_id: str,
    attempt: int,
    secrets: Sequence[str],
    timestamp: int,
) -> tuple[bytes, dict[str, str]]:
    """The exact bytes and headers of one POST (DESIGN.md section 4), signed over the
    bytes sent: the JSON body, or `payload=<url-encoded JSON>` for form webhooks."""
    raw = orjson.dumps(body)
    if content_type == "form":
        raw = urlencode({"payload": raw.decode()}).encode()
        mime = "application/x-www-form-urlencoded"
    else:
        mime = "application/json"
    headers = {
        "Content-Type": mime,
        "User-Agent": user_agent,
        f"{prefix}-Event": event_type,
        f"{prefix}-Delivery": delivery_id,
        f"{prefix}-Attempt": str(attempt),
    }
    headers.update(
        signature_headers(
            prefix=prefix, secrets=secrets, delivery_id=delivery_id, timestamp=timestamp, body=raw
        )
    )
    return raw, headers


def cut_text(raw: bytes, limit: int = BODY_CUT) -> str:
    """The first `limit` bytes as text (a split UTF-8 sequence at the end is replaced)."""
    return raw[:limit].decode("utf-8", errors="replace")


def clean_text(text: str) -> str:
    """`text` as something PostgreSQL (text, jsonb) and JSON encoders always accept.

    What an endpoint sends is not ours to trust: aiohttp hands non-UTF-8 header bytes
    back as surrogate escapes (`'caf\\udce9'`), which no UTF-8 encoder takes, and NUL is
    valid UTF-8 that PostgreSQL refuses. Both become U+FFFD.
    """
    if text.isascii() and "\x00" not in text:
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside the escape range
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


def clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names and values through `clean_text` (see there)."""
    return {clean_text(str(k)): clean_text(str(v)) for k, v in headers.items()}


@dataclass(frozen=True)
class AttemptRow:
    """One row of `delivery_attempts`: never updated, never deleted."""

    delivery_id: str
    webhook_id: str
    org: str
    event_id: str
    event_type: str
    attempt: int
    trigger: str
    outcome: str
    started_at: datetime
    duration_ms: float = 0.0
    request_headers: dict[str, str] | None = None
    request_body: str | None = None
    response_status: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    error: str | None = None
    resolved_ip: str | None = None
    next_attempt_at: datetime | None = None

    @property
    def status(self) -> str:
        return delivery_status(self.outcome, self.next_attempt_at)

    @property
    def counts_as_failure(self) -> bool:
        """A failure of the endpoint. A row without an error class made no request (a
        dead letter for a secret this process cannot decrypt): it says nothing about the
        endpoint, so it must not count towards disabling the webhook."""
        return self.outcome in ("failed", "dead") and self.error is not None

    def next_at(self, delay_s: float | None) -> datetime | None:
        return None if delay_s is None else self.started_at + timedelta(seconds=delay_s)


@dataclass(frozen=True)
class HealthDelta:
    """A batch's effect on a webhook's consecutive-failure count: `reset` when a success
    was seen (the count restarts at `failures`, those after the last success)."""

    reset: bool
    failures: int
    first_failure_at: datetime | None


def health_deltas(rows: Iterable[AttemptRow]) -> dict[str, HealthDelta]:
    """Folds attempts, in order, into per-webhook changes; skipped attempts do not count."""
    out: dict[str, HealthDelta] = {}
    for row in rows:
        held = out.get(row.webhook_id, HealthDelta(False, 0, None))
        if row.outcome == "succeeded":
            out[row.webhook_id] = HealthDelta(True, 0, None)
        elif row.counts_as_failure:
            first = held.first_failure_at or row.started_at
            out[row.webhook_id] = HealthDelta(held.reset, held.failures + 1, first)
    return out


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
