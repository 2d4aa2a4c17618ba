"""Unit tests for signatures: GitHub-style, Standard Webhooks (checked with its library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.core.signing import (
    generate_secret,
    github_signature,
    signature_headers,
    signing_key,
    standard_signature,
    verify_github,
    verify_standard,
)

secrets_ = st.binary(min_size=32, max_size=32).map(generate_secret)
bodies = st.binary(max_size=2048)
# The standardwebhooks library decodes the body as JSON after verifying it.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
json_bodies = json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
TS = 1_795_000_000


def test_generate_secret_shape() -> None:
    secret = generate_secret(bytes(range(32)))
    assert secret.startswith("whsec_")
    assert base64.b64decode(secret[6:]) == bytes(range(32))
    with pytest.raises(ValueError):
        generate_secret(b"short")


def test_github_signature_known_value() -> None:
    # The example from GitHub's "Validating webhook deliveries" documentation.
    sig = github_signature("It's a Secret to Everybody", b"Hello, World!")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_signing_key() -> None:
    assert signing_key("whsec_" + base64.b64encode(b"k" * 32).decode()) == b"k" * 32
    assert signing_key("plain secret") == b"plain secret"
    assert signing_key("whsec_not*base64") == b"whsec_not*base64"


def test_standard_signature_known_value() -> None:
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest()
    ).decode()
    assert standard_signature(secret, "msg_1", 1700000000, b"{}") == "v1," + expected


def test_signature_headers_shape() -> None:
    headers = signature_headers(
        prefix="X-Hookline", secrets=["s1"], delivery_id="d1", timestamp=TS, body=b"{}"
    )
    assert set(headers) == {
        "X-Hookline-Signature-256",
        "X-Hub-Signature-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert headers["X-Hookline-Signature-256"] == headers["X-Hub-Signature-256"]
    assert headers["webhook-id"] == "d1"
    assert headers["webhook-timestamp"] == str(TS)
    with pytest.raises(ValueError):
        signature_headers(prefix="X", secrets=[], delivery_id="d", timestamp=TS, body=b"")


@given(secrets_, json_bodies, st.uuids())
def test_standardwebhooks_library_accepts_our_headers(
    secret: str, body: bytes, uid: object
) -> None:
    # The library rejects timestamps more than 5 minutes from its own clock.
    now = int(time.time())
    headers = signature_headers(
        prefix="X-Hookline", secrets=[secret], delivery_id=str(uid), timestamp=now, body=body
    )
    Webhook(secret).verify(body, headers)


def test_standardwebhooks_library_verifies_json_payload() -> None:
    secret = generate_secret(b"\x01" * 32)
    body = json.dumps({"event": "push", "ref": "main"}).encode()
    headers = signature_headers(
        prefix="X-Hookline", secrets=[secret], delivery_id="d", timestamp=int(time.time()),
        body=body,
    )  # fmt: skip
    assert Webhook(secret).verify(body, headers) == {"event": "push", "ref": "main"}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret(b"\x02" * 32)).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


@given(secrets_, bodies)
def test_github_header_verifies_with_compare_digest(secret: str, body: bytes) -> None:
    headers = signature_headers(
        prefix="X-Hookline", secrets=[secret], delivery_id="d", timestamp=TS, body=body
    )
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected)
    assert verify_github(secret, body, headers["X-Hookline-Signature-256"])
    assert not verify_github(secret + "x", body, headers["X-Hub-Signature-256"])
    assert not verify_github(secret, body + b"x", headers["X-Hub-Signature-256"])


@given(secrets_, secrets_, json_bodies)
def test_rotation_signs_with_both_secrets(current: str, previous: str, body: bytes) -> None:
    now = int(time.time())
    headers = signature_headers(
        prefix="X-Hookline", secrets=[current, previous], delivery_id="d", timestamp=now,
        body=body,
    )  # fmt: skip
    sigs = headers["webhook-signature"].split(" ")
    assert len(sigs) == 2
    assert all(s.startswith("v1,") for s in sigs)
    for secret in (current, previous):
        assert verify_standard(secret, "d", now, body, headers["webhook-signature"])
        Webhook(secret).verify(body, headers)
    # GitHub-style headers carry the current secret only.
    assert verify_github(current, body, headers["X-Hub-Signature-256"])
    if current != previous:
        assert not verify_github(previous, body, headers["X-Hub-Signature-256"])


@given(secrets_, secrets_, bodies)
def test_verify_standard_rejects_wrong_inputs(secret: str, other: str, body: bytes) -> None:
    header = standard_signature(secret, "d", TS, body)
    assert verify_standard(secret, "d", TS, body, header)
    assert verify_standard(secret, "d", str(TS), body, "v1,bogus " + header)
    assert not verify_standard(secret, "e", TS, body, header)
    assert not verify_standard(secret, "d", TS + 1, body, header)
    assert not verify_standard(secret, "d", TS, body + b"x", header)
    assert not verify_standard(secret, "d", "nan", body, header)
    assert not verify_standard(secret, "d", TS, body, "")
    assert not verify_standard(secret, "d", TS, body, None)
    if other != secret:
        assert not verify_standard(other, "d", TS, body, header)


def test_plain_secret_uses_utf8_bytes_for_standard_signature() -> None:
    body = b'{"a":1}'
    expected = base64.b64encode(
        hmac.new("pässword".encode(), b"d.1." + body, hashlib.sha256).digest()
    ).decode()
    assert standard_signature("pässword", "d", 1, body) == "v1," + expected
