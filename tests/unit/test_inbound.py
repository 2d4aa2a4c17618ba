"""The pure part of inbound webhooks: verification, bodies, redaction, client address."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from standardwebhooks import Webhook as StandardWebhook

from shared.core.errors import BadRequest, Unauthorized, ValidationError
from shared.core.inbound import (
    LOGGED_BODY_BYTES,
    REDACTED,
    UnsupportedMediaType,
    client_ip,
    idempotency_key,
    inbound_payload,
    logged_body,
    new_inbound_id,
    parse_call_body,
    redact_headers,
    validate_inbound_fields,
    verify_call,
)
from shared.core.signing import github_signature
from shared.core.ssrf import Allowlist

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_700_000_000


def _h(**headers: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})


def test_ids_carry_at_least_128_random_bits() -> None:
    assert new_inbound_id(b"\x00" * 24) == "ih_" + "A" * 32
    with pytest.raises(ValueError):
        new_inbound_id(b"\x00" * 15)


def test_secret_header_is_compared_whole_and_case_insensitively_named() -> None:
    verify_call("secret_header", "s3cret-value", _h(x_webhook_secret="s3cret-value"), b"", now=0)
    for wrong in ("s3cret-valu", "s3cret-value ", "", "S3CRET-VALUE", "\u00e9"):
        with pytest.raises(Unauthorized):
            verify_call("secret_header", "s3cret-value", _h(X_Webhook_Secret=wrong), b"", now=0)
    with pytest.raises(Unauthorized, match="missing"):
        verify_call("secret_header", "s3cret-value", _h(), b"", now=0)


@given(body=st.binary(max_size=200), other=st.binary(max_size=200))
def test_github_signature_holds_for_its_body_only(body: bytes, other: bytes) -> None:
    header = _h(X_Hub_Signature_256=github_signature(SECRET, body))
    verify_call("github", SECRET, header, body, now=0)
    if other != body:
        with pytest.raises(Unauthorized):
            verify_call("github", SECRET, header, other, now=0)


@given(body=st.text(max_size=200), skew=st.integers(-300, 300))
def test_standard_signatures_from_the_reference_library_verify(body: str, skew: int) -> None:
    stamp = NOW + skew
    signature = StandardWebhook(SECRET).sign("msg_1", datetime.fromtimestamp(stamp, UTC), body)
    headers = _h(webhook_id="msg_1", webhook_timestamp=str(stamp), webhook_signature=signature)
    verify_call("standard", SECRET, headers, body.encode(), now=NOW)


def test_standard_refuses_old_future_and_forged_calls() -> None:
    def headers(stamp: int, msg: str = "m") -> CIMultiDict[str]:
        sig = StandardWebhook(SECRET).sign(msg, datetime.fromtimestamp(stamp, UTC), "{}")
        return _h(webhook_id=msg, webhook_timestamp=str(stamp), webhook_signature=sig)

    for stamp in (NOW - 301, NOW + 301):
        with pytest.raises(Unauthorized, match="5 minutes"):
            verify_call("standard", SECRET, headers(stamp), b"{}", now=NOW)
    forged = headers(NOW)
    forged["webhook-id"] = "other"
    with pytest.raises(Unauthorized, match="does not match"):
        verify_call("standard", SECRET, forged, b"{}", now=NOW)
    with pytest.raises(Unauthorized, match="required"):
        verify_call("standard", SECRET, _h(webhook_id="m"), b"{}", now=NOW)


def test_none_verifies_nothing() -> None:
    verify_call("none", SECRET, _h(), b"anything", now=0)


def test_idempotency_key_and_standard_message_id() -> None:
    assert idempotency_key("secret_header", _h(Idempotency_Key="k-1")) == "k-1"
    assert idempotency_key("secret_header", _h(webhook_id="m")) is None
    assert idempotency_key("standard", _h(webhook_id="m")) == "m"
    assert idempotency_key("standard", _h(webhook_id="m", Idempotency_Key="k")) == "k"
    with pytest.raises(ValidationError) as caught:
        idempotency_key("none", _h(Idempotency_Key="x" * 201))
    assert caught.value.field == "Idempotency-Key"


@pytest.mark.parametrize(
    ("content_type", "raw", "expected"),
    [
        ("application/json", b'{"message":"hi"}', {"message": "hi"}),
        ("application/json; charset=utf-8", b'{"a":1}', {"a": 1}),
        ("application/vnd.pagerduty+json", b'{"a":1}', {"a": 1}),
        ("", b'{"a":1}', {"a": 1}),
        ("application/json", b"", {}),
        ("application/x-www-form-urlencoded", b"a=1&b=2&b=3", {"a": "1", "b": ["2", "3"]}),
        ("application/x-www-form-urlencoded", b'{"message":"curl -d"}', {"message": "curl -d"}),
        ("application/x-www-form-urlencoded", b"payload=%7B%22a%22%3A1%7D", {"a": 1}),
        ("application/x-www-form-urlencoded", b"payload=not-json", {"payload": "not-json"}),
        ("application/octet-stream", b'{"a":1}', {"a": 1}),
        ("text/plain", b'{"a":1}', {"a": 1}),
    ],
)
def test_bodies_become_objects(content_type: str, raw: bytes, expected: object) -> None:
    assert parse_call_body(content_type, raw) == expected


@pytest.mark.parametrize(
    ("content_type", "raw", "error"),
    [
        ("text/plain", b"hello", UnsupportedMediaType),
        ("application/octet-stream", b"[1]", UnsupportedMediaType),
        ("application/xml", b"<a/>", UnsupportedMediaType),
        ("application/json", b"[1]", ValidationError),
        ("application/json", b'"text"', ValidationError),
        ("application/json", b"{oops", BadRequest),
        ("application/x-www-form-urlencoded", b"\xff\xfe", BadRequest),
    ],
)
def test_bodies_that_are_refused(content_type: str, raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_call_body(content_type, raw)


def test_credentials_are_redacted_and_the_rest_kept() -> None:
    kept = redact_headers(
        [
            ("X-Webhook-Secret", "s"),
            ("X-Hub-Signature-256", "sha256=..."),
            ("webhook-signature", "v1,..."),
            ("Authorization", "Bearer x"),
            ("X-Gitlab-Token", "t"),
            ("Cookie", "c"),
            ("User-Agent", "GitHub-Hookshot/1"),
            ("webhook-id", "msg_1"),
        ]
    )
    assert kept["User-Agent"] == "GitHub-Hookshot/1" and kept["webhook-id"] == "msg_1"
    secret_names = set(kept) - {"User-Agent", "webhook-id"}
    assert {kept[n] for n in secret_names} == {REDACTED}


def test_logged_body_is_cut_on_a_character_boundary() -> None:
    assert logged_body(b"x" * (LOGGED_BODY_BYTES + 10)) == "x" * LOGGED_BODY_BYTES
    cut = logged_body(b"x" * (LOGGED_BODY_BYTES - 1) + "\u00e9".encode())
    assert cut == "x" * (LOGGED_BODY_BYTES - 1)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = Allowlist.parse("10.0.0.0/8")
    assert client_ip("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"
    assert client_ip("10.0.0.2", "1.2.3.4", proxies) == "1.2.3.4"
    # The client may forge the left of the chain: the nearest untrusted hop is the caller.
    assert client_ip("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7", proxies) == "1.2.3.4"
    assert client_ip("10.0.0.2", "1.2.3.4", Allowlist.parse("")) == "10.0.0.2"
    assert client_ip("10.0.0.2", "garbage", proxies) == "10.0.0.2"
    assert ipaddress.ip_address(client_ip("10.0.0.2", "::1", proxies) or "")


def test_fields_validation() -> None:
    assert validate_inbound_fields({"name": "ci"}, partial=False) == {"name": "ci"}
    body = {"name": "n", "target": "bot", "event": "pipeline.run_completed", "verify": "none"}
    full = validate_inbound_fields({**body, "secret": "12345678", "active": False}, partial=False)
    assert full == {**body, "secret": "12345678", "active": False}
    for body, field in (
        ({"name": "n", "event": "pipeline"}, "action"),
        ({"name": "n", "verify": "hmac"}, "verify"),
        ({"name": ""}, "name"),
        ({"name": "n", "active": "yes"}, "active"),
    ):
        with pytest.raises(ValidationError) as caught:
            validate_inbound_fields(body, partial=False)
        assert caught.value.field == field
    with pytest.raises(ValidationError) as caught:
        validate_inbound_fields({"secret": "12345678"}, partial=True)
    assert caught.value.field == "secret"


def test_payload_shape() -> None:
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    payload = inbound_payload(
        {"message": 7, "x": 1},
        target=None,
        webhook_id="ih_1",
        name="ci",
        invocation_id="inv",
        source_ip="1.2.3.4",
        received_at=at,
    )
    assert payload == {
        "message": None,
        "target": None,
        "data": {"message": 7, "x": 1},
        "inbound": {
            "webhook_id": "ih_1",
            "name": "ci",
            "invocation_id": "inv",
            "source_ip": "1.2.3.4",
            "received_at": "2026-12-03T12:00:00.000Z",
        },
    }
