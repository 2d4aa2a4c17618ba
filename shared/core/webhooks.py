"""Webhook fields: validation of create/patch bodies and the API view of a webhook."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .events import format_timestamp
from .matching import validate_filters
from .messages import WebhookBase
from .notices import validate_email
from .retry import RetryPolicy
from .ssrf import validate_url

CONTENT_TYPES = ("json", "form")
EDITABLE = (
    "url",
    "events",
    "active",
    "content_type",
    "description",
    "retry",
    "timeout_s",
    "headers",
    "notify_email",
)
CREATE_ONLY = ("secret",)
DEFAULT_EVENTS = ("push",)

# Custom headers (DESIGN.md section 12): how many, how long, and how a value reads back.
MAX_HEADERS = 10
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 4096
MASK = "\u2022\u2022\u2022\u2022"
# An HTTP token (RFC 9110 section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
# What Hookline sets or the HTTP client frames with: a webhook may not replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "host",
        "user-agent",
        "x-hub-signature-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value


def validate_headers(value: object, *, prefix: str) -> dict[str, str]:
    """A webhook's custom headers, checked (422 with `field="headers"`): an object of at
    most MAX_HEADERS names, each an HTTP token that replaces none of RESERVED_HEADERS nor
    any `<prefix>-*` header, each value a string with no control character (tab aside).
    A value of MASK keeps the value already held (the caller resolves it). null is {}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(
            "headers must be an object of header names to values", field="headers"
        )
    if len(value) > MAX_HEADERS:
        raise ValidationError(
            f"headers allows at most {MAX_HEADERS} headers, got {len(value)}", field="headers"
        )
    seen: set[str] = set()
    own = prefix.lower() + "-"
    for name, text in value.items():
        if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
            raise ValidationError(f"headers: {name!r} is not a valid header name", field="headers")
        low = name.lower()
        if low in RESERVED_HEADERS or low.startswith(own):
            raise ValidationError(f"headers: {name} is set by Hookline", field="headers")
        if low in seen:
            raise ValidationError(f"headers: {name} is given twice", field="headers")
        seen.add(low)
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE:
            raise ValidationError(
                f"headers: the value of {name} must be a string of at most "
                f"{MAX_HEADER_VALUE} characters",
                field="headers",
            )
        if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in text):
            raise ValidationError(
                f"headers: the value of {name} holds a control character (CR, LF, NUL ...)",
                field="headers",
            )
    return dict(value)


def validate_fields(
    body: object, *, partial: bool, header_prefix: str = "X-Hookline"
) -> dict[str, Any]:
    """Checks a create (partial=False) or PATCH body; returns the normalised fields.

    Raises ValidationError naming the first bad field; unknown fields are refused.
    """
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", field="body")
    allowed = EDITABLE if partial else EDITABLE + CREATE_ONLY
    for name in body:
        if name not in allowed:
            raise ValidationError(f"unknown field '{name}'", field=name)
    out: dict[str, Any] = {}
    if not partial and "url" not in body:
        raise ValidationError("url is required", field="url")
    if not partial and "events" not in body:
        body = {**body, "events": list(DEFAULT_EVENTS)}  # what GitHub subscribes by default
    if "url" in body:
        validate_url(body["url"])
        out["url"] = body["url"]
    if "events" in body:
        out["events"] = list(validate_filters(body["events"]))
    if "active" in body:
        out["active"] = _check_bool(body["active"], "active")
    if "content_type" in body:
        if body["content_type"] not in CONTENT_TYPES:
            raise ValidationError("content_type must be 'json' or 'form'", field="content_type")
        out["content_type"] = body["content_type"]
    if "description" in body:
        desc = body["description"]
        if desc is None:
            desc = ""
        if not isinstance(desc, str) or len(desc) > 1000:
            raise ValidationError(
                "description must be a string of at most 1000 characters", field="description"
            )
        out["description"] = desc
    if "retry" in body:
        out["retry"] = (
            None if body["retry"] is None else RetryPolicy.from_config(body["retry"]).to_config()
        )
    if "timeout_s" in body:
        t = body["timeout_s"]
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 30:
            raise ValidationError("timeout_s must be an integer from 1 to 30", field="timeout_s")
        out["timeout_s"] = t
    if "headers" in body:
        out["headers"] = validate_headers(body["headers"], prefix=header_prefix)
    if "notify_email" in body:
        out["notify_email"] = validate_email(body["notify_email"])
    if "secret" in body and body["secret"] is not None:
        s = body["secret"]
        if not isinstance(s, str) or not 8 <= len(s) <= 256 or not s.isprintable():
            raise ValidationError("secret must be 8-256 printable characters", field="secret")
        out["secret"] = s
    return out


@dataclass(frozen=True)
class LastDelivery:
    """A webhook's newest delivery: its derived status, when it was last attempted, and
    the HTTP status that attempt got (None without a response)."""

    status: str
    at: datetime
    http_status: int | None

    def to_api(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "at": format_timestamp(self.at),
            "http_status": self.http_status,
        }


@dataclass(frozen=True)
class Webhook(WebhookBase):
    """A webhook as the API shows it (never with its secret)."""

    description: str
    retry: dict[str, Any] | None
    timeout_s: int
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    header_names: tuple[str, ...] = field(default=())  # the values stay sealed
    notify_email: str | None = None
    disabled_at: datetime | None = None
    # Health (DESIGN.md section 11): consecutive failed attempts, the newest delivery.
    failure_count: int = 0
    last_delivery: LastDelivery | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": {"org": self.org, "repo": self.repo},
            "url": self.url,
            "events": list(self.events),
            "active": self.active,
            "content_type": self.content_type,
            "description": self.description,
            "retry": self.retry or RetryPolicy().to_config(),
            "timeout_s": self.timeout_s,
            "headers": {name: MASK for name in self.header_names},
            "notify_email": self.notify_email,
            "disabled_reason": self.disabled_reason,
            "disabled_at": None if self.disabled_at is None else format_timestamp(self.disabled_at),
            "failure_count": self.failure_count,
            "last_delivery": None if self.last_delivery is None else self.last_delivery.to_api(),
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
        }
