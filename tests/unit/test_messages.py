"""The typed Kafka messages: decoding at the edge, deterministic ids, round trips."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import ValidationError
from shared.core.messages import (
    DeliveryMessage,
    MessageError,
    WebhookRecord,
    decode_event,
    delivery_id_for,
    make_event,
)
from tests.records import webhook_record


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


WEBHOOK = "7d3f4a52-3b7e-4c55-9a47-1f6f2c9d0e11"


def test_delivery_message_round_trip_and_key() -> None:
    msg = DeliveryMessage(
        delivery_id=delivery_id_for("e", WEBHOOK),
        webhook_id=WEBHOOK,
        org="acme",
        event_id="e",
        event_type="push",
        body={"event": "push"},
        attempt=10_000,
        due_at=2.0,
        enqueued_at=1.5,
    )
    assert DeliveryMessage.decode(msg.encode()) == msg
    assert msg.key == WEBHOOK.encode()


def _delivery(**over: object) -> bytes:
    obj: dict[str, object] = {
        "delivery_id": delivery_id_for("e", WEBHOOK),
        "webhook_id": WEBHOOK,
        "org": "o",
        "event_id": "e",
        "event_type": "push",
        "body": {},
    }
    obj.update(over)
    return orjson.dumps(obj)


def test_the_numbered_and_parked_flags_are_fields_and_read_from_older_extras() -> None:
    flagged = DeliveryMessage.decode(_delivery(numbered=True, parked=True))
    assert (flagged.numbered, flagged.parked) == (True, True)
    assert DeliveryMessage.decode(flagged.encode()) == flagged
    older = DeliveryMessage.decode(_delivery(extra={"numbered": True, "parked": True, "x": 1}))
    assert (older.numbered, older.parked, older.extra) == (True, True, {"x": 1})
    plain = DeliveryMessage.decode(_delivery())
    assert (plain.numbered, plain.parked) == (False, False)


def test_delivery_ids_are_read_in_canonical_form() -> None:
    msg = DeliveryMessage.decode(_delivery(webhook_id=WEBHOOK.upper()))
    assert msg.webhook_id == WEBHOOK


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"trigger": "bogus"}, "trigger"),
        ({"body": "x"}, "body"),
        ({"webhook_id": ""}, "webhook"),
        # What the delivery log (uuid, int columns) or orjson could never store.
        ({"webhook_id": "w"}, "webhook_id"),
        ({"delivery_id": "not-a-uuid"}, "delivery_id"),
        ({"delivery_id": 7}, "delivery_id"),
        ({"attempt": 0}, "attempt"),
        ({"attempt": -1}, "attempt"),
        ({"attempt": 10_001}, "attempt"),
        ({"attempt": 2**31}, "attempt"),
        ({"attempt": "2"}, "attempt"),
        ({"attempt": 1.5}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"due_at": "soon"}, "due_at"),
        ({"enqueued_at": [1]}, "enqueued_at"),
        ({"org": "a\x00b"}, "org"),
        ({"event_id": "e\n1"}, "event_id"),
        ({"event_type": "push\x7f"}, "event_type"),
        ({"extra": [1]}, "extra"),
    ],
)
def test_bad_delivery_message_gives_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        DeliveryMessage.decode(_delivery(**change))
    assert reason in caught.value.reason


def test_nan_and_infinite_times_are_refused() -> None:
    # orjson will not write NaN, so build the JSON by hand, as another producer could.
    for bad in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        raw = _delivery()[:-1] + b',"due_at":' + bad + b"}"
        with pytest.raises(MessageError):
            DeliveryMessage.decode(raw)


@pytest.mark.parametrize("field", ["id", "org", "repo"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n", "\x85", "\ud800"])
def test_make_event_refuses_control_characters(field: str, char: str) -> None:
    values = {"org": "acme", "repo": "widgets", "id": "evt-1"}
    values[field] = "a" + char + "b"
    with pytest.raises(ValidationError) as caught:
        make_event(
            org=values["org"],
            repo=values["repo"],
            event="push",
            payload={},
            event_id=values["id"],
        )
    assert caught.value.field == field


def test_direct_published_event_with_a_nul_id_is_rejected_with_a_reason() -> None:
    with pytest.raises(MessageError) as caught:
        decode_event(_event(id="evt\u0000"))
    assert caught.value.reason.startswith("id:")


def test_webhook_record_round_trip_and_bad_record() -> None:
    record = webhook_record(
        org="acme", repo=None, events=("push", "pull_request.*"), secret_enc="gAAAA", revision=3
    )
    assert WebhookRecord.decode(record.encode()) == record
    with pytest.raises(MessageError, match="bad webhook record"):
        WebhookRecord.decode(orjson.dumps({**orjson.loads(record.encode()), "events": ["nope"]}))
    with pytest.raises(MessageError):
        WebhookRecord.decode(b"{")


@given(st.text(max_size=60), st.uuids())
def test_delivery_id_is_exactly_uuid5(event_id: str, webhook: uuid.UUID) -> None:
    from shared.core.messages import DELIVERY_NAMESPACE

    expected = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{webhook}"))
    assert delivery_id_for(event_id, str(webhook)) == expected


@given(st.binary(min_size=1, max_size=40), st.integers(1, 64))
def test_cached_partitioner_agrees_with_the_default(key: bytes, n: int) -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from shared.kafka import CachedPartitioner

    parts = list(range(n))
    cached = CachedPartitioner(limit=4)
    first = cached(key, parts, parts)
    assert first == cached(key, parts, parts) == DefaultPartitioner()(key, parts, parts)


def test_an_org_event_has_no_repository_and_is_keyed_by_org() -> None:
    event = make_event(org="acme", repo=None, event="agent.action", payload={"repository": 1})
    assert event.key == b"acme"
    body = event.body()
    assert "repository" not in body and body["organization"] == {"login": "acme"}
    assert decode_event(orjson.dumps(event.to_dict())) == event


def test_a_direct_event_without_repo_is_rejected_unless_repo_is_null() -> None:
    with pytest.raises(MessageError) as caught:
        decode_event(orjson.dumps({"event": "push", "org": "acme", "payload": {}}))
    assert caught.value.reason.startswith("repo:")
    org_event = decode_event(
        orjson.dumps({"event": "push", "org": "acme", "repo": None, "payload": {}})
    )
    assert org_event.repo is None


@given(
    body=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.booleans()),
        max_size=6,
    ),
    org=st.text(min_size=1, max_size=20),
)
def test_encoding_with_a_shared_body_is_the_plain_encoding(
    body: dict[str, object], org: str
) -> None:
    msg = DeliveryMessage(
        delivery_id=str(uuid.uuid4()),
        webhook_id=str(uuid.uuid4()),
        org=org + ',"body":{}',  # the marker inside a string does not fool it
        event_id="e",
        event_type="push",
        body=body,
    )
    assert msg.encode_with(orjson.dumps(body)) == msg.encode()


def test_an_events_dict_has_every_field_and_decodes_back() -> None:
    msg = make_event(org="acme", repo="widgets", event="push", payload={"ref": "main"})
    assert list(msg.to_dict()) == [f.name for f in dataclasses.fields(msg)]
    assert decode_event(orjson.dumps(msg.to_dict())) == msg
