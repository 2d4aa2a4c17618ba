"""Webhook signatures (DESIGN.md section 4): GitHub-style and Standard Webhooks.

Signing and verification are both here so the local receiver checks exactly what the
sender produces.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Sequence

__all__ = [
    "SECRET_PREFIX",
    "SECRET_RANDOM_BYTES",
    "generate_secret",
    "github_signature",
    "signature_headers",
    "signing_key",
    "standard_signature",
    "verify_github",
    "verify_standard",
]

SECRET_PREFIX = "whsec_"
SECRET_RANDOM_BYTES = 32
GITHUB_HEADER = "X-Hub-Signature-256"


def generate_secret(random_bytes: bytes) -> str:
    """Return a new webhook secret, ``whsec_`` + base64 of the caller's 32 random bytes."""
    if len(random_bytes) != SECRET_RANDOM_BYTES:
        raise ValueError(
            f"a secret needs {SECRET_RANDOM_BYTES} random bytes, got {len(random_bytes)}"
        )
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def github_signature(secret: str, body: bytes) -> str:
    """Return ``sha256=`` + hex HMAC-SHA256 of ``body`` keyed with the secret's UTF-8 bytes."""
    # hmac.digest: the one-shot C path, about twice as fast as hmac.new(...).hexdigest()
    return "sha256=" + hmac.digest(secret.encode("utf-8"), body, "sha256").hex()


@functools.lru_cache(maxsize=4096)
def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: base64-decoded after ``whsec_``, else the UTF-8 bytes.

    A ``whsec_`` secret whose remainder is not valid base64 is used as UTF-8 bytes whole,
    so a hand-made secret never makes signing fail.
    """
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,`` + base64 HMAC-SHA256 of ``"{msg_id}.{timestamp}."`` + ``body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(signing_key(secret), signed, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    *,
    prefix: str,
    secrets: Sequence[str],
    delivery_id: str,
    timestamp: int,
    body: bytes,
) -> dict[str, str]:
    """Return the signature headers of one attempt.

    ``secrets`` is ``[current]`` or, during a rotation, ``[current, previous]``. The
    GitHub-style headers are signed with the current secret only; ``webhook-signature``
    carries one space-separated ``v1,`` signature per secret.
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign a delivery")
    github = github_signature(secrets[0], body)
    return {
        f"{prefix}-Signature-256": github,
        GITHUB_HEADER: github,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, delivery_id, timestamp, body) for secret in secrets
        ),
    }


def verify_github(secret: str, body: bytes, header: str | None) -> bool:
    """Check a ``X-Hub-Signature-256`` value against ``body`` in constant time."""
    if not header:
        return False
    expected = github_signature(secret, body)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8"))


def verify_standard(
    secret: str, msg_id: str, timestamp: int | str, body: bytes, header: str | None
) -> bool:
    """Check a ``webhook-signature`` value: True if any of its space-separated ``v1,``
    signatures matches. The caller checks the timestamp's freshness.
    """
    if not header:
        return False
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    expected = standard_signature(secret, msg_id, ts, body).encode("ascii")
    found = False
    for candidate in header.split():
        # No early return: compare against every candidate so timing reveals nothing.
        found |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    return found
