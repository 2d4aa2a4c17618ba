"""Webhook fields: validation of create/patch bodies and the API view of a webhook."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .events import format_timestamp
from .matching import validate_filters
from .retry import RetryPolicy
from .ssrf import validate_url

CONTENT_TYPES = ("json", "form")
EDITABLE = ("url", "events", "active", "content_type", "description", "retry", "timeout_s")
CREATE_ONLY = ("secret",)
DEFAULT_EVENTS = ("push",)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value


def validate_fields(body: object, *, partial: bool) -> dict[str, Any]:
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
    if "secret" in body and body["secret"] is not None:
        s = body["secret"]
        if not isinstance(s, str) or not 8 <= len(s) <= 256 or not s.isprintable():
            raise ValidationError("secret must be 8-256 printable characters", field="secret")
        out["secret"] = s
    return out


@dataclass(frozen=True)
class Webhook:
    """A webhook as the API shows it (never with its secret)."""

    id: str
    org: str
    repo: str | None
    url: str
    events: tuple[str, ...]
    active: bool
    content_type: str
    description: str
    retry: dict[str, Any] | None
    timeout_s: int
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

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
            "disabled_reason": self.disabled_reason,
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
        }
