"""The add/edit webhook form: its values for display, and the API body it stands for.

The body goes to the same WebhookStore.create/update (and so the same validation) as the
REST API's; a 422 names a field, and the form shows the message next to it.
"""

from __future__ import annotations

import re
from typing import Any

from multidict import MultiDictProxy

from shared.core.errors import ValidationError
from shared.core.events import CATALOG
from shared.core.webhooks import Webhook

FORM_FIELDS = (
    "repo",
    "url",
    "content_type",
    "secret",
    "events",
    "retry",
    "timeout_s",
    "active",
    "notify_email",
)
CONTENT_TYPES = (("json", "application/json"), ("form", "application/x-www-form-urlencoded"))


def form_field(api_field: str | None) -> str:
    """The form field an API error names (`retry.schedule` is the retry field)."""
    name = (api_field or "").split(".")[0].split("[")[0]
    return name if name in (*FORM_FIELDS, "description") else "form"


def values_of(webhook: Webhook) -> dict[str, Any]:
    schedule = (webhook.retry or {}).get("schedule")
    return {
        "repo": webhook.repo or "",
        "url": webhook.url,
        "content_type": webhook.content_type,
        "secret": "",
        "events": list(webhook.events),
        "retry": _schedule_text(schedule) if webhook.retry else "",
        "timeout_s": str(webhook.timeout_s),
        "active": webhook.active,
        "description": webhook.description,
        "notify_email": webhook.notify_email or "",
    }


def blank(repo: str | None) -> dict[str, Any]:
    return {
        "repo": repo or "",
        "url": "",
        "content_type": "json",
        "secret": "",
        "events": ["push"],
        "retry": "",
        "timeout_s": "10",
        "active": True,
        "description": "",
        "notify_email": "",
    }


def _schedule_text(schedule: list[float] | None) -> str:
    if not schedule:
        return ""
    return ", ".join(str(int(s)) if float(s).is_integer() else str(s) for s in schedule)


def submitted(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The form's values as typed, to show again beside its errors."""

    def text(name: str, *, strip: bool = True) -> str:
        value = form.get(name, "")
        if not isinstance(value, str):
            return ""
        return value.strip() if strip else value

    return {
        "repo": text("repo"),
        "url": text("url"),
        "content_type": text("content_type") or "json",
        "secret": "",  # never echoed back
        "events": [e for e in form.getall("events", []) if isinstance(e, str)],
        "retry": text("retry"),
        "timeout_s": text("timeout_s"),
        "active": form.get("active") == "on",
        "description": text("description", strip=False),
        "notify_email": text("notify_email"),
    }


def events_filter(chosen: list[str]) -> list[str]:
    """Checked boxes as filters: `*` wins, and a family's "all actions" covers its actions."""
    if "*" in chosen:
        return ["*"]
    families = {c for c in chosen if c in CATALOG}
    out: list[str] = []
    for item in chosen:
        if item in out:
            continue
        if "." in item and item.split(".")[0] in families:
            continue
        out.append(item)
    return out


def _retry(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    delays: list[float | int] = []
    for part in re.split(r"[\s,]+", text.strip()):
        try:
            number = float(part)
        except ValueError:
            raise ValidationError(
                "the retry schedule is delays in seconds, separated by commas", field="retry"
            ) from None
        delays.append(int(number) if number.is_integer() else number)
    return {"schedule": delays}


def body_of(values: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    """The create body of the form's values; ValidationError names the bad form field."""
    timeout = values["timeout_s"]
    if not re.fullmatch(r"\d{1,3}", timeout):
        raise ValidationError(
            "the timeout is a whole number of seconds, 1 to 30", field="timeout_s"
        )
    body: dict[str, Any] = {
        "url": values["url"],
        "content_type": values["content_type"],
        "events": events_filter(values["events"]),
        "retry": _retry(values["retry"]),
        "timeout_s": int(timeout),
        "active": values["active"],
        "description": values["description"],
        "notify_email": values["notify_email"] or None,
    }
    if secret:
        body["secret"] = secret
    return body


def changes(webhook: Webhook, body: dict[str, Any]) -> dict[str, Any]:
    """Only what the edit changed: saving an unchanged form must not, say, re-enable a
    webhook (which resets its failure count) or re-resolve its URL."""
    current = {
        "url": webhook.url,
        "content_type": webhook.content_type,
        "events": list(webhook.events),
        "retry": webhook.retry,
        "timeout_s": webhook.timeout_s,
        "active": webhook.active,
        "description": webhook.description,
        "notify_email": webhook.notify_email,
    }
    return {k: v for k, v in body.items() if current.get(k) != v}
