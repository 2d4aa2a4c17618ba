"""Notifications about a webhook's health, pure (DESIGN.md section 11): the event a
transition becomes (`webhook.failing`, `webhook.disabled`, `webhook.enabled`), its
deterministic id, the webhook it is about, and the mail that says the same.

A transition is decided by a conditional UPDATE in the adapter (shared/notices.py); this
module only shapes what it emits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError

__all__ = [
    "FAILING_MAIL_EVERY_S",
    "NOTICE_KINDS",
    "Notice",
    "about_webhook",
    "notice_event_id",
    "validate_email",
]

NOTICE_KINDS = ("failing", "disabled", "enabled")
# A webhook's `failing` mail goes out at most this often (the event itself every time).
FAILING_MAIL_EVERY_S = 3600
# Deliberately plain: one @, no spaces or control characters, a dotted domain.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
MAX_EMAIL = 254


def validate_email(value: object, name: str = "notify_email") -> str | None:
    """An address for notices (`local@domain.tld`), or None; 422 naming `name` else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise ValidationError(f"{name} must be an email address like ops@example.com", field=name)
    return value


def notice_event_id(webhook_id: str, kind: str, seq: int) -> str:
    """The event id of the `seq`-th notice about a webhook: the same on every replay of
    one transition, so the outbox row, its delivery ids and its mail de-duplicate."""
    if kind not in NOTICE_KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    return f"hookline-webhook.{kind}-{webhook_id}-{seq}"


@dataclass(frozen=True)
class Notice:
    """One transition of one webhook, as it is told to org hooks and by mail."""

    kind: str
    webhook_id: str
    url: str
    org: str
    repo: str | None
    reason: str
    failure_count: int
    last_error: str | None
    seq: int

    @property
    def event_type(self) -> str:
        return f"webhook.{self.kind}"

    @property
    def event_id(self) -> str:
        return notice_event_id(self.webhook_id, self.kind, self.seq)

    def payload(self) -> dict[str, Any]:
        """The event's payload: `{"webhook":{"id","url","scope"},"reason","failure_count",
        "last_error"}`."""
        return {
            "webhook": {
                "id": self.webhook_id,
                "url": self.url,
                "scope": {"org": self.org, "repo": self.repo},
            },
            "reason": self.reason,
            "failure_count": self.failure_count,
            "last_error": self.last_error,
        }

    def subject(self) -> str:
        where = f"{self.org}/{self.repo}" if self.repo else f"{self.org} (org)"
        return f"[Hookline] webhook {self.kind}: {self.url} on {where}"

    def text(self) -> str:
        """The mail's plain-text body."""
        lines = [
            f"Webhook {self.webhook_id} ({self.url}) is {self.kind}.",
            "",
            f"Reason: {self.reason}",
            f"Consecutive failed attempts: {self.failure_count}",
            f"Last error: {self.last_error or '-'}",
            "",
        ]
        if self.kind == "disabled":
            lines.append(
                'Deliveries are skipped until it is re-enabled: PATCH {"active": true} '
                '(with "recover_since" to send again what failed or was skipped).'
            )
        return "\n".join(lines) + "\n"


def about_webhook(event_type: str, payload: dict[str, Any]) -> str | None:
    """The id of the webhook a `webhook.*` notice is about (never delivered to it)."""
    if not event_type.startswith("webhook."):
        return None
    webhook = payload.get("webhook")
    if isinstance(webhook, dict) and isinstance(webhook.get("id"), str):
        return str(webhook["id"])
    return None
