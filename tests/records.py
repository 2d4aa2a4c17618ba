"""Messages built for tests: the fields a test does not care about filled in, so that a
test names only the ones it is about."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from shared.core.attempts import AttemptRow
from shared.core.messages import DeliveryMessage, WebhookRecord

_WEBHOOK = WebhookRecord(
    id="hook-1",
    org="o",
    repo="widgets",
    url="http://127.0.0.1:9/hook",
    events=("push",),
    active=True,
    content_type="json",
    timeout_s=10,
    retry=None,
    secret_enc="sealed",
    previous_secret_enc=None,
    previous_expires_at=None,
    revision=1,
)
_DELIVERY = DeliveryMessage(
    delivery_id="d-1", webhook_id="w", org="o", event_id="e", event_type="push", body={}
)


def webhook_record(**fields: Any) -> WebhookRecord:
    """A webhook record of "hook-1" on o/widgets for `push`, with `fields` instead."""
    return replace(_WEBHOOK, **fields)


def delivery_message(**fields: Any) -> DeliveryMessage:
    """A first automatic delivery of a `push`, with `fields` instead."""
    return replace(_DELIVERY, **fields)


def attempt_row(outcome: str, started_at: datetime, **fields: Any) -> AttemptRow:
    """The row of an attempt at `delivery_message()` ending in `outcome`, with `fields`
    instead."""
    return replace(AttemptRow.of(_DELIVERY, outcome=outcome, started_at=started_at), **fields)
