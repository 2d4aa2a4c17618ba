"""The typed Kafka messages: decoding at the edge, deterministic ids, round trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.messages import (
    DeliveryMessage,
    MessageError,
    WebhookRecord,
    decode_event,
    delivery_id_for,
    make_event,
)


def _event(**over: object) -> bytes:
    obj: dict[str, object] = {
        "id": "evt-1",
        "event": "pull_request",
        "action": "opened",
        "org": "acme",
        "repo": "widgets",
        "payload": {"number": 7},
        "created_at": "2024-05-01T12:00:00Z",
    }
    obj.update(over)
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


def test_decode_event_reads_every_field() -> None:
    event = decode_event(_event())
    assert (event.id, event.type, event.org, event.repo) == (
        "evt-1",
        "pull_request.opened",
        "acme",
        "widgets",
    )
    assert event.key == b"acme/widgets"
    assert event.created_at.startswith("2024-05-01T12:00:00")
    body = event.body()
    assert body["event"] == "pull_request" and body["action"] == "opened"
    assert body["event_id"] == "evt-1" and body["number"] == 7
    assert body["repository"]["full_name"] == "acme/widgets"


def test_dotted_type_equals_event_plus_action() -> None:
    dotted = decode_event(_event(event="pull_request.opened", action=...))
    assert dotted.type == decode_event(_event()).type


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_event(event="no_such_type", action=...), "event"),
        (_event(payload=[1]), "payload"),
        (_event(org=...), "org"),
        (_event(repo="a/b"), "repo"),
        (_event(created_at="yesterday"), "created_at"),
        (_event(id=""), "id"),
    ],
)
def test_bad_events_give_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode_event(raw)
    assert reason in caught.value.reason
    assert caught.value.reason == str(caught.value)


def test_event_without_id_gets_a_deterministic_id() -> None:
    raw = _event(id=...)
    first, again = decode_event(raw), decode_event(raw)
    assert first.id == again.id
    uuid.UUID(first.id)  # a uuid, derived from the bytes
    other = decode_event(_event(id=..., payload={"number": 8}))
    assert other.id != first.id


def test_event_without_created_at_takes_the_message_timestamp() -> None:
    event = decode_event(_event(created_at=...), timestamp_ms=1_700_000_000_000)
    moment = datetime.fromisoformat(event.created_at.replace("Z", "+00:00"))
    assert moment == datetime.fromtimestamp(1_700_000_000, UTC)


def test_make_event_validates_and_encodes_round_trip() -> None:
    msg = make_event(org="acme", repo="widgets", event="push", payload={"ref": "main"})
    again = decode_event(orjson.dumps(msg.to_dict()))
    assert again == msg


def test_delivery_id_is_deterministic_and_distinct() -> None:
    a = delivery_id_for("evt-1", "hook-1")
    assert a == delivery_id_for("evt-1", "hook-1")
    assert len({a, delivery_id_for("evt-1", "hook-2"), delivery_id_for("evt-2", "hook-1")}) == 3
    assert uuid.UUID(a).version == 5


@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_delivery_id_depends_only_on_its_inputs(event_id: str, webhook_id: str) -> None:
    assert delivery_id_for(event_id, webhook_id) == delivery_id_for(event_id, webhook_id)


def test_delivery_message_round_trip_and_key() -> None:
    msg = DeliveryMessage(
        delivery_id=delivery_id_for("e", "w"),
        webhook_id="w",
        org="acme",
        event_id="e",
        event_type="push",
        body={"event": "push"},
        enqueued_at=1.5,
    )
    assert DeliveryMessage.decode(msg.encode()) == msg
    assert msg.key == b"w"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"trigger": "bogus"}, "trigger"), ({"body": "x"}, "body"), ({"webhook_id": ""}, "webhook")],
)
def test_bad_delivery_message_gives_a_reason(change: dict[str, object], reason: str) -> None:
    obj = {
        "delivery_id": "d",
        "webhook_id": "w",
        "org": "o",
        "event_id": "e",
        "event_type": "push",
        "body": {},
    }
    obj.update(change)
    with pytest.raises(MessageError) as caught:
        DeliveryMessage.decode(orjson.dumps(obj))
    assert reason in caught.value.reason


def test_webhook_record_round_trip_and_bad_record() -> None:
    record = WebhookRecord(
        id="w",
        org="acme",
        repo=None,
        url="https://example.com/hook",
        events=("push", "pull_request.*"),
        active=True,
        content_type="json",
        timeout_s=10,
        retry=None,
        secret_enc="gAAAA",
        previous_secret_enc=None,
        previous_expires_at=None,
        revision=3,
    )
    assert WebhookRecord.decode(record.encode()) == record
    with pytest.raises(MessageError, match="bad webhook record"):
        WebhookRecord.decode(orjson.dumps({**orjson.loads(record.encode()), "events": ["nope"]}))
    with pytest.raises(MessageError):
        WebhookRecord.decode(b"{")
