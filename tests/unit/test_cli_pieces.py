"""Pure pieces of the CLI: scopes, what tail shows again, a dead letter made a replay."""

from __future__ import annotations

import click
import pytest

from services.cli.client import CliError
from services.cli.dlq import replay_message
from services.cli.hooks import _last_delivery, scope_path, state
from services.cli.session import CliSettings
from services.cli.tail import Follower
from shared.core.messages import DeliveryMessage
from tests.records import delivery_message


def test_scopes() -> None:
    assert scope_path("acme/widgets") == "/repos/acme/widgets"
    assert scope_path("acme") == "/orgs/acme"
    assert scope_path("a b/c?d") == "/repos/a%20b/c%3Fd"
    assert scope_path("acme/widgets/") == "/repos/acme/widgets"  # a trailing slash is fine
    for bad in ("", "a/b/c", "/", "a//b"):
        with pytest.raises(click.BadParameter):
            scope_path(bad)


def test_tail_shows_each_logged_attempt_once() -> None:
    follower = Follower()
    first = {"id": "a", "last_at": "t1", "attempts": 1}
    other = {"id": "b", "last_at": "t2", "attempts": 1}
    # Newest first from the API; looked at oldest first.
    assert follower.changed([other, first]) == [first, other]
    assert follower.changed([other, first]) == []
    reserved = {**first, "attempts": 2, "status": "pending"}  # a redelivery, not sent yet
    assert follower.changed([reserved]) == []
    retried = {**first, "attempts": 2, "last_at": "t3"}
    assert follower.changed([retried, other]) == [retried]
    assert follower.changed([{"id": "c", "last_at": None}]) == []

    one = {"attempt": 1, "started_at": "t1"}
    two = {"attempt": 2, "started_at": "t3"}
    three = {"attempt": 3, "started_at": "t4"}
    assert follower.new_attempts({"id": "a", "attempts": [one]}) == [one]
    assert follower.new_attempts({"id": "a", "attempts": [one, three, two]}) == [two, three]
    assert follower.new_attempts({"id": "a", "attempts": [one, two, three]}) == []


def test_a_replay_is_one_manual_attempt_due_now_numbered_by_the_sender() -> None:
    dead = delivery_message(
        delivery_id="5b0c1d1e-6f6f-4b6c-8e69-6e65686f6f6b",
        webhook_id="6b0c1d1e-6f6f-4b6c-8e69-6e65686f6f6b",
        body={"event": "push"},
        attempt=6,
        trigger="retry",
        due_at=123.0,
        last_error="http_status",
        parked=True,
    )
    again = replay_message(dead)
    assert (again.delivery_id, again.webhook_id, again.body) == (
        dead.delivery_id,
        dead.webhook_id,
        dead.body,
    )
    assert (again.trigger, again.single, again.attempt) == ("manual", True, 7)
    assert (again.due_at, again.numbered, again.parked, again.last_error) == (
        None,
        False,
        False,
        None,
    )
    assert DeliveryMessage.decode(again.encode()) == again


def test_settings_from_the_environment() -> None:
    assert CliSettings.from_env({}) == CliSettings(
        url="http://127.0.0.1:8080", token=None, kafka_bootstrap="127.0.0.1:9092"
    )
    env = {
        "HOOKLINE_URL": "https://h.example",
        "HOOKLINE_TOKEN": "",
        "HOOKLINE_KAFKA_BOOTSTRAP": "k:1",
    }
    assert CliSettings.from_env(env) == CliSettings("https://h.example", None, "k:1")
    for bad, name in (
        ({"HOOKLINE_URL": ""}, "HOOKLINE_URL"),
        ({"HOOKLINE_URL": "127.0.0.1:8080"}, "HOOKLINE_URL"),
        ({"HOOKLINE_KAFKA_BOOTSTRAP": " "}, "HOOKLINE_KAFKA_BOOTSTRAP"),
    ):
        with pytest.raises(CliError, match=name):
            CliSettings.from_env(bad).checked()


def test_a_webhook_shows_its_health() -> None:
    active = {"active": True, "failure_count": 0}
    assert state(active).plain == "active"
    assert state({**active, "failure_count": 3}).plain == "failing (3 in a row)"
    off = {"active": False, "failure_count": 15, "disabled_reason": "15 failed"}
    assert state(off).plain == "disabled (15 failed)"
    assert _last_delivery(None) == "none yet"
    last = _last_delivery({"status": "failed", "http_status": 500, "at": "2026-12-03T20:00:00Z"})
    assert last.startswith("failed, HTTP 500, ")
