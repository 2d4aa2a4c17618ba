"""Notices about a webhook's health, pure: their ids, payloads (against the catalog's
schema), mail text, the webhook a notice is about, notify_email, and the failure text."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import pytest

from services.matcher.matcher import deliveries_for
from shared.core.attempts import AttemptRow
from shared.core.errors import ValidationError
from shared.core.health import health_deltas
from shared.core.messages import WebhookRecord, make_event
from shared.core.notices import Notice, about_webhook, notice_event_id, validate_email
from shared.core.samples import schema
from shared.core.webhooks import validate_fields
from shared.subscriptions import WebhookTable
from tests.records import attempt_row, webhook_record

WID = "5f0c2c1e-8a4b-4d2e-9b1a-6c3d2e1f0a9b"


def _notice(kind: str = "failing", seq: int = 1) -> Notice:
    return Notice(
        kind=kind,
        webhook_id=WID,
        url="https://hooks.example.com/ci",
        org="acme",
        repo="widgets",
        reason="3 consecutive failed attempts",
        failure_count=3,
        last_error="http_status 500",
        seq=seq,
    )


def test_event_ids_are_deterministic_and_distinct_per_transition() -> None:
    assert _notice().event_id == _notice().event_id == notice_event_id(WID, "failing", 1)
    ids = {_notice(k, n).event_id for k in ("failing", "disabled", "enabled") for n in (1, 2)}
    assert len(ids) == 6
    with pytest.raises(ValueError):
        notice_event_id(WID, "exploded", 1)


@pytest.mark.parametrize("kind", ["failing", "disabled", "enabled"])
def test_the_payload_follows_the_catalog_schema_and_makes_a_valid_org_event(kind: str) -> None:
    notice = _notice(kind)
    payload = notice.payload()
    jsonschema.validate(payload, schema(notice.event_type))
    assert payload["webhook"] == {
        "id": WID,
        "url": "https://hooks.example.com/ci",
        "scope": {"org": "acme", "repo": "widgets"},
    }
    assert (payload["failure_count"], payload["last_error"]) == (3, "http_status 500")
    event = make_event(
        produced=False,
        org="acme",
        repo=None,
        event=notice.event_type,
        payload=payload,
        event_id=notice.event_id,
    )
    assert event.type == f"webhook.{kind}" and event.repo is None and event.key == b"acme"


def test_the_mail_says_what_happened() -> None:
    notice = _notice("disabled")
    assert "disabled" in notice.subject() and "acme/widgets" in notice.subject()
    text = notice.text()
    assert WID in text and "http_status 500" in text and "recover_since" in text


def test_a_notice_names_the_webhook_it_is_about_and_nothing_else_does() -> None:
    assert about_webhook("webhook.failing", _notice().payload()) == WID
    assert about_webhook("push", {"webhook": {"id": WID}}) is None
    assert about_webhook("webhook.enabled", {"webhook": "x"}) is None


def _record(wid: str, repo: str | None, events: tuple[str, ...]) -> WebhookRecord:
    return webhook_record(id=wid, org="acme", repo=repo, url="http://127.0.0.1/", events=events)


def test_the_matcher_sends_a_notice_to_org_hooks_but_never_to_its_subject() -> None:
    table = WebhookTable("127.0.0.1:1", client_id="unit")
    about = "00000000-0000-4000-8000-00000000000a"
    other = "00000000-0000-4000-8000-00000000000b"
    repo_hook = "00000000-0000-4000-8000-00000000000c"
    table.put(_record(about, None, ("*",)))  # an org hook that is itself failing
    table.put(_record(other, None, ("webhook.*",)))
    table.put(_record(repo_hook, "widgets", ("*",)))
    notice = Notice("failing", about, "http://x/", "acme", None, "r", 3, None, 1)
    event = make_event(
        produced=False,
        org="acme",
        repo=None,
        event=notice.event_type,
        payload=notice.payload(),
        event_id=notice.event_id,
    )
    assert [d.webhook_id for d in deliveries_for(event, table, 0.0)] == [other]


@pytest.mark.parametrize("good", ["ops@example.com", "a.b+c@sub.example.co.uk"])
def test_notify_email_accepts_addresses(good: str) -> None:
    assert validate_email(good) == good
    assert validate_fields({"notify_email": good}, partial=True) == {"notify_email": good}


@pytest.mark.parametrize(
    "bad", ["ops", "ops@", "@example.com", "ops@localhost", "a b@example.com", "x\n@e.com", 7]
)
def test_notify_email_refuses_what_is_not_an_address(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_fields({"notify_email": bad}, partial=True)
    assert info.value.field == "notify_email"


def test_null_or_empty_notify_email_clears_it() -> None:
    assert validate_fields({"notify_email": None}, partial=True) == {"notify_email": None}
    assert validate_fields({"notify_email": ""}, partial=True) == {"notify_email": None}


def test_the_newest_failure_is_described_for_the_notices() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def row(outcome: str, status: int | None, error: str | None) -> AttemptRow:
        return attempt_row(outcome, t, response_status=status, error=error)

    deltas = health_deltas([row("failed", 500, "http_status"), row("failed", None, "timeout")])
    assert deltas["w"].last_error == "timeout" and deltas["w"].failures == 2
    assert health_deltas([row("dead", 503, "http_status")])["w"].last_error == "http_status 503"
