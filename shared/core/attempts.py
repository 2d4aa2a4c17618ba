"""One delivery attempt, pure: the request a subscriber receives, how its result is
classified, what follows it (`plan_follow_ups`: retry, dead-letter, disable), and the row
the delivery log keeps (DESIGN.md 4, 6, 7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from .messages import DeliveryMessage
from .retry import RetryPolicy, parse_retry_after
from .signing import signature_headers

__all__ = [
    "BODY_CUT",
    "ERROR_CLASSES",
    "OUTCOMES",
    "AttemptResult",
    "AttemptRow",
    "DeadLetter",
    "Decision",
    "Disable",
    "Effect",
    "Outcome",
    "Retry",
    "build_request",
    "clean_headers",
    "clean_text",
    "cut_headers",
    "cut_text",
    "decide",
    "delivery_status",
    "plan_follow_ups",
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
    disabled at once (with the reason). `detail` describes a failure for the dead-letter
    copy (`http_status 503`, `timeout`)."""

    outcome: str
    error: str | None
    next_delay_s: float | None = None
    to_dlq: bool = False
    disable_reason: str | None = None
    detail: str | None = None


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
    detail = f"http_status {result.status}" if error == "http_status" else error
    if result.status == 410:
        return Decision(
            "failed" if single else "dead",
            error,
            to_dlq=not single,
            disable_reason="endpoint answered 410 Gone",
            detail=detail,
        )
    if single:
        return Decision("failed", error, detail=detail)
    retry_after = None
    if result.status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(_header(result.headers, "retry-after"), now=now)
    delay = policy.delay_after(attempt, rand=rand, retry_after=retry_after)
    if delay is None:
        return Decision("dead", error, to_dlq=True, detail=detail)
    return Decision("failed", error, next_delay_s=delay, detail=detail)


@dataclass(frozen=True)
class Retry:
    """Send `msg` (the next attempt, due at its `due_at`) through the retry tier that
    holds `delay_s`."""

    msg: DeliveryMessage
    delay_s: float


@dataclass(frozen=True)
class DeadLetter:
    """Copy `msg` to the dead-letter topic; `reason` is the header, when no attempt was
    made to say why (a secret that cannot be decrypted)."""

    msg: DeliveryMessage
    reason: str | None = None


@dataclass(frozen=True)
class Disable:
    """Turn the webhook off at once."""

    webhook_id: str
    reason: str


Effect = Retry | DeadLetter | Disable


@dataclass(frozen=True)
class Outcome:
    """An attempt that ran (or was skipped): the row the log keeps and what follows it,
    in order. The sender applies each effect once, then logs the row."""

    row: AttemptRow
    effects: tuple[Effect, ...] = ()

    def handed_off(self) -> Outcome:
        """The same attempt when its delivery was handed off meanwhile: its copy carries
        the delivery on, so no retry or dead letter of its own (disabling still holds)."""
        kept = tuple(e for e in self.effects if isinstance(e, Disable))
        return Outcome(self.row, kept)


def plan_follow_ups(msg: DeliveryMessage, decision: Decision, now: datetime) -> tuple[Effect, ...]:
    """What follows an attempt of `msg` (as received: its `attempt` counts the retry
    chain) that `decide` judged, made at `now`: a retry due `next_delay_s` later, a
    dead-letter copy with the failure described, disabling; in that order."""
    effects: list[Effect] = []
    if decision.next_delay_s is not None:
        retry = replace(
            msg,
            attempt=msg.attempt + 1,
            trigger="retry",
            due_at=now.timestamp() + decision.next_delay_s,
            last_error=decision.error,
            numbered=False,
        )
        effects.append(Retry(retry, decision.next_delay_s))
    if decision.to_dlq:
        effects.append(DeadLetter(replace(msg, last_error=decision.detail or decision.error)))
    if decision.disable_reason is not None:
        effects.append(Disable(msg.webhook_id, decision.disable_reason))
    return tuple(effects)


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
    msg: DeliveryMessage,
    *,
    content_type: str,
    prefix: str,
    user_agent: str,
    secrets: Sequence[str],
    timestamp: int,
    custom: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact bytes and headers of the POST of the attempt `msg` asks for (DESIGN.md
    section 4), signed over the bytes sent: the JSON body, or `payload=<url-encoded
    JSON>` for form webhooks. The webhook's `custom` headers come first; none of them
    can replace one of Hookline's (creation refuses those names; this drops them too)."""
    delivery_id = msg.delivery_id
    raw = orjson.dumps(msg.body)
    if content_type == "form":
        raw = urlencode({"payload": raw.decode()}).encode()
        mime = "application/x-www-form-urlencoded"
    else:
        mime = "application/json"
    own = {
        "Content-Type": mime,
        "User-Agent": user_agent,
        f"{prefix}-Event": msg.event_type,
        f"{prefix}-Delivery": delivery_id,
        f"{prefix}-Attempt": str(msg.attempt),
    }
    own.update(
        signature_headers(
            prefix=prefix, secrets=secrets, delivery_id=delivery_id, timestamp=timestamp, body=raw
        )
    )
    taken = {name.lower() for name in own}
    mine = prefix.lower() + "-"
    headers = {
        name: value
        for name, value in (custom or {}).items()
        if name.lower() not in taken and not name.lower().startswith(mine)
    }
    headers.update(own)
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


def cut_headers(headers: Mapping[str, str], limit: int = BODY_CUT) -> dict[str, str]:
    """The headers, in order, while they fit in `limit` bytes as sent (`name: value` and
    a CRLF each); the first that does not fit ends the cut, as a body is cut."""
    kept: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        size += len(name.encode()) + len(value.encode()) + 4
        if size > limit:
            break
        kept[name] = value
    return kept


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

    @classmethod
    def of(
        cls, msg: DeliveryMessage, *, outcome: str, started_at: datetime, **fields: Any
    ) -> AttemptRow:
        """The row of the attempt `msg` asks for (its delivery, event, number, trigger)."""
        return cls(
            delivery_id=msg.delivery_id,
            webhook_id=msg.webhook_id,
            org=msg.org,
            event_id=msg.event_id,
            event_type=msg.event_type,
            attempt=msg.attempt,
            trigger=msg.trigger,
            outcome=outcome,
            started_at=started_at,
            **fields,
        )

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
