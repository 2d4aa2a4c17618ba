"""The event catalog (DESIGN.md section 5) as data, and the shaping of a delivered body.

A full event type is ``family`` or ``family.action`` (``push``, ``pull_request.opened``).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from .errors import ValidationError

__all__ = [
    "CATALOG",
    "EVENT_TYPES",
    "FAMILIES",
    "build_body",
    "catalog_document",
    "format_timestamp",
    "is_known_type",
    "parse_event_type",
    "parse_produced_type",
    "split_type",
]

# family -> actions; an empty list means the family is itself the full type (no action).
CATALOG: dict[str, list[str]] = {
    "ping": [],
    "push": [],
    "create": [],
    "delete": [],
    "release": ["created", "updated", "published"],
    "pull_request": [
        "opened",
        "closed",
        "merged",
        "reopened",
        "edited",
        "updated",
        "review_requested",
        "review_submitted",
    ],
    "issue": ["opened", "closed", "reopened", "edited", "deleted", "commented"],
    "comment": ["created"],
    "commit": ["comment"],
    "pipeline": ["run_started", "run_completed", "job_completed"],
    "star": ["added", "removed"],
    "fork": ["created"],
    "agent": ["action"],
    "ai_review": ["started", "completed", "suggestion_applied"],
    # Hookline's own notifications about an org's webhooks (delivered to its org hooks).
    "webhook": ["failing", "disabled", "enabled"],
}

FAMILIES: tuple[str, ...] = tuple(CATALOG)
# Families only Hookline emits: a producer sending one would forge a notification.
HOOKLINE_ONLY: frozenset[str] = frozenset({"webhook"})

EVENT_TYPES: tuple[str, ...] = tuple(
    full
    for family, actions in CATALOG.items()
    for full in ([family] if not actions else [f"{family}.{a}" for a in actions])
)

_EVENT_TYPE_SET: frozenset[str] = frozenset(EVENT_TYPES)


def is_known_type(full: str) -> bool:
    """Return True if ``full`` is a type of the catalog (``push``, ``release.created``)."""
    return full in _EVENT_TYPE_SET


def split_type(full: str) -> tuple[str, str | None]:
    """Split a full type into ``(family, action)``; action is None for ``push`` and the like."""
    family, dot, action = full.partition(".")
    return family, (action if dot else None)


def _check_action(family: str, action: str | None) -> str:
    actions = CATALOG[family]
    if not actions:
        if action is not None:
            raise ValidationError(
                f"event {family!r} takes no action, got {action!r}", field="action"
            )
        return family
    if action is None:
        raise ValidationError(
            f"event {family!r} needs an action, one of: {', '.join(actions)}", field="action"
        )
    if action not in actions:
        raise ValidationError(
            f"unknown action {action!r} for event {family!r}; "
            f"expected one of: {', '.join(actions)}",
            field="action",
        )
    return f"{family}.{action}"


def parse_event_type(event: object, action: object = None) -> str:
    """Return the full event type named by ``event`` (and ``action``), or raise 422.

    Accepts ``("pull_request", "opened")``, ``("pull_request.opened", None)`` and
    ``("push", None)``. A dotted event given together with the same action is accepted;
    with a different action it is rejected with ``field="action"``.
    """
    if not isinstance(event, str) or not event:
        raise ValidationError("event must be a non-empty string", field="event")
    if action is not None and (not isinstance(action, str) or not action):
        raise ValidationError("action must be a non-empty string", field="action")
    family, dotted_action = split_type(event)
    if family not in CATALOG:
        raise ValidationError(f"unknown event type {event!r}", field="event")
    if dotted_action is not None:
        if not dotted_action or f"{family}.{dotted_action}" not in _EVENT_TYPE_SET:
            raise ValidationError(f"unknown event type {event!r}", field="event")
        if action is not None and action != dotted_action:
            raise ValidationError(
                f"action {action!r} disagrees with event {event!r}", field="action"
            )
        return event
    return _check_action(family, action)


def parse_produced_type(event: object, action: object = None) -> str:
    """`parse_event_type` for what a producer sends (ingest, the outbox, an inbound
    webhook): also refuses the families only Hookline emits (422 on `event`)."""
    full = parse_event_type(event, action)
    family = split_type(full)[0]
    if family in HOOKLINE_ONLY:
        raise ValidationError(
            f"{family}.* events are Hookline's own notifications; producers cannot send them",
            field="event",
        )
    return full


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset; none is taken as UTC) into an
    aware UTC datetime; ValueError (or OverflowError at the ends of time) if it is not one.
    """
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as RFC 3339 UTC with millisecond precision and a ``Z`` suffix.

    A naive datetime is taken to be UTC already.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # isoformat is twice as fast as strftime, which shows on the inbound edge's profile;
    # and the same moment is often formatted again (every event of a batch is created at
    # the request's time; an inbound call's time is in its payload and its event).
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"


def build_body(
    payload: dict[str, Any],
    *,
    full_type: str,
    event_id: str,
    created_at: datetime,
    org: str,
    repo: str | None,
) -> dict[str, Any]:
    """Return the body a subscriber receives: a copy of ``payload`` with Hookline's fields set.

    Sets ``event``, ``type`` (the full dotted type), ``action`` (removed when the type has
    none), ``event_id``,
    ``created_at`` and ``repository.full_name``; a producer's ``repository`` object keeps
    its other keys. An org event (``repo`` None) has no ``repository`` but
    ``organization.login``. The input payload is not modified.
    """
    family, action = split_type(full_type)
    body = dict(payload)
    body["event"] = family
    body["type"] = full_type
    if action is None:
        body.pop("action", None)
    else:
        body["action"] = action
    body["event_id"] = event_id
    body["created_at"] = format_timestamp(created_at)
    if repo is None:
        body.pop("repository", None)
        organization = payload.get("organization")
        body["organization"] = {**(organization if isinstance(organization, dict) else {})}
        body["organization"]["login"] = org
        return body
    supplied = payload.get("repository")
    repository: dict[str, Any] = dict(supplied) if isinstance(supplied, dict) else {}
    repository["full_name"] = f"{org}/{repo}"
    body["repository"] = repository
    return body


def catalog_document() -> dict[str, Any]:
    """Return the ``GET /event-types`` document: every type (with its description, an
    example payload and the payload's JSON Schema) and the families' actions."""
    from .samples import describe, example, schema  # samples build on this module

    event_types = []
    for full in EVENT_TYPES:
        family, action = split_type(full)
        event_types.append(
            {
                "type": full,
                "family": family,
                "action": action,
                "description": describe(full),
                "example": example(full),
                "schema": schema(full),
            }
        )
    return {
        "event_types": event_types,
        "families": {family: list(actions) for family, actions in CATALOG.items()},
    }


def ping_body(webhook_id: str, *, org: str, repo: str | None, now: datetime) -> dict[str, Any]:
    """The body of a `ping` delivery."""
    body: dict[str, Any] = {
        "event": "ping",
        "hook_id": webhook_id,
        "zen": "Deliver every event, at least once.",
        "created_at": format_timestamp(now),
        "organization": {"login": org},
    }
    if repo is not None:
        body["repository"] = {"full_name": f"{org}/{repo}"}
    return body
