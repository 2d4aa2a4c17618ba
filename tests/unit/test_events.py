"""Unit tests for the event catalog, type parsing and the delivered body."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.core.errors import ValidationError
from shared.core.events import (
    CATALOG,
    EVENT_TYPES,
    build_body,
    catalog_document,
    format_timestamp,
    parse_event_type,
    split_type,
)

CREATED = datetime(2026, 11, 23, 18, 0, 0, 123456, tzinfo=UTC)


def test_catalog_has_every_contract_type() -> None:
    expected = {
        "ping", "push", "create", "delete",
        "release.created", "release.updated", "release.published",
        "pull_request.opened", "pull_request.closed", "pull_request.merged",
        "pull_request.reopened", "pull_request.edited", "pull_request.updated",
        "pull_request.review_requested", "pull_request.review_submitted",
        "issue.opened", "issue.closed", "issue.reopened", "issue.edited",
        "issue.deleted", "issue.commented",
        "comment.created",
        "pipeline.run_started", "pipeline.run_completed", "pipeline.job_completed",
        "star.added", "star.removed",
        "fork.created", "agent.action",
        "ai_review.started", "ai_review.completed", "ai_review.suggestion_applied",
        "commit.comment", "webhook.failing", "webhook.disabled", "webhook.enabled",
    }  # fmt: skip
    assert set(EVENT_TYPES) == expected
    assert len(EVENT_TYPES) == len(expected)
    assert CATALOG["push"] == []
    assert CATALOG["fork"] == ["created"]


@pytest.mark.parametrize(
    ("event", "action", "full"),
    [
        ("pull_request", "opened", "pull_request.opened"),
        ("pull_request.opened", None, "pull_request.opened"),
        ("pull_request.opened", "opened", "pull_request.opened"),
        ("push", None, "push"),
        ("fork", "created", "fork.created"),
        ("agent.action", None, "agent.action"),
    ],
)
def test_parse_event_type_accepts_both_spellings(event: str, action: str | None, full: str) -> None:
    assert parse_event_type(event, action) == full


@pytest.mark.parametrize(
    ("event", "action", "field"),
    [
        ("pull_requests", "opened", "event"),
        ("nope", None, "event"),
        ("pull_request.nope", None, "event"),
        ("pull_request.", None, "event"),
        ("", None, "event"),
        (None, None, "event"),
        ("pull_request", "nope", "action"),
        ("pull_request", None, "action"),
        ("pull_request.opened", "closed", "action"),
        ("push", "opened", "action"),
        ("pull_request", 3, "action"),
    ],
)
def test_parse_event_type_rejects_with_the_field(event: object, action: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_event_type(event, action)
    assert info.value.field == field
    assert info.value.http_status == 422


def test_every_catalog_type_round_trips() -> None:
    for full in EVENT_TYPES:
        family, action = split_type(full)
        assert parse_event_type(family, action) == full
        assert parse_event_type(full) == full


def test_split_type() -> None:
    assert split_type("pull_request.opened") == ("pull_request", "opened")
    assert split_type("push") == ("push", None)


def test_format_timestamp_is_rfc3339_utc_millis() -> None:
    assert format_timestamp(CREATED) == "2026-11-23T18:00:00.123Z"
    plus_two = datetime(2026, 11, 23, 20, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(plus_two) == "2026-11-23T18:00:00.000Z"
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"


def test_build_body_sets_hookline_fields_without_mutating_payload() -> None:
    payload = {"number": 7, "repository": {"id": 42, "full_name": "spoofed/repo"}}
    original = json.loads(json.dumps(payload))
    body = build_body(
        payload,
        full_type="pull_request.opened",
        event_id="evt_1",
        created_at=CREATED,
        org="acme",
        repo="web",
    )
    assert body == {
        "number": 7,
        "event": "pull_request",
        "type": "pull_request.opened",
        "action": "opened",
        "event_id": "evt_1",
        "created_at": "2026-11-23T18:00:00.123Z",
        "repository": {"id": 42, "full_name": "acme/web"},
    }
    assert payload == original


def test_build_body_drops_stale_action_and_replaces_non_dict_repository() -> None:
    body = build_body(
        {"action": "opened", "repository": "acme/web", "ref": "main"},
        full_type="push",
        event_id="evt_2",
        created_at=CREATED,
        org="acme",
        repo="web",
    )
    assert "action" not in body
    assert body["event"] == "push"
    assert body["repository"] == {"full_name": "acme/web"}
    assert body["ref"] == "main"


def test_catalog_document() -> None:
    doc = catalog_document()
    types = [entry["type"] for entry in doc["event_types"]]
    assert types == list(EVENT_TYPES)
    brief = [{k: e[k] for k in ("type", "family", "action")} for e in doc["event_types"]]
    assert {"type": "pull_request.opened", "family": "pull_request", "action": "opened"} in brief
    assert {"type": "push", "family": "push", "action": None} in brief
    assert doc["families"]["star"] == ["added", "removed"]
    assert doc["families"]["ping"] == []
    doc["families"]["star"].append("x")
    assert CATALOG["star"] == ["added", "removed"]
    json.dumps(doc)
