"""Inbound webhooks (DESIGN.md section 9), the pure part: fields, verification of a call,
the body a call may carry, what the invocation log keeps of it, and the event it becomes.

Nothing here does I/O; the clock and randomness come from the caller.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from .attempts import clean_text
from .errors import (
    BadRequest,
    HooklineError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    ValidationError,
)
from .events import format_timestamp, parse_produced_type
from .jsonbody import parse_json
from .signing import verify_github, verify_standard
from .ssrf import Allowlist

VERIFY_MODES = ("secret_header", "github", "standard", "none")
RESULTS = (
    "accepted",
    "duplicate",
    "unauthorized",
    "disabled",
    "too_large",
    "invalid_payload",
    "rate_limited",
)
DEFAULT_EVENT = "agent.action"
ID_PREFIX = "ih_"
ID_RANDOM_BYTES = 24  # 192 bits: unguessable
SECRET_HEADER = "X-Webhook-Secret"
IDEMPOTENCY_HEADER = "Idempotency-Key"
STANDARD_TOLERANCE_S = 300
LOGGED_BODY_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 200
REDACTED = "[redacted]"
_FIELDS = ("name", "target", "event", "verify", "secret", "active")
# Header names whose values are credentials: never stored in the invocation log.
_SECRET_WORDS = ("secret", "signature", "token", "authorization", "cookie", "password", "api-key")


class Disabled(HooklineError, code="disabled", http_status=403):
    """The inbound webhook is disabled: its URL stays valid, calls are refused."""


class UnsupportedMediaType(HooklineError, code="unsupported_media_type", http_status=415):
    """The call's body is neither JSON nor a form."""


# What the invocation log records for each refusal.
_RESULT_OF: tuple[tuple[type[HooklineError], str], ...] = (
    (Unauthorized, "unauthorized"),
    (Disabled, "disabled"),
    (PayloadTooLarge, "too_large"),
    (RateLimited, "rate_limited"),
    (UnsupportedMediaType, "invalid_payload"),
    (BadRequest, "invalid_payload"),
    (ValidationError, "invalid_payload"),
)


def result_of(exc: HooklineError) -> str:
    """The invocation `result` of a refused call."""
    for cls, result in _RESULT_OF:
        if isinstance(exc, cls):
            return result
    return "invalid_payload"


_ID = re.compile(r"ih_[A-Za-z0-9_-]{22,86}")


def is_inbound_id(text: str) -> bool:
    """True if `text` has the shape of an inbound webhook id (others are never looked up)."""
    return _ID.fullmatch(text) is not None


def new_inbound_id(random_bytes: bytes) -> str:
    """`ih_` + url-safe base64 of the caller's random bytes (at least 16 of them)."""
    if len(random_bytes) < 16:
        raise ValueError("an inbound webhook id needs at least 128 random bits")
    return ID_PREFIX + base64.urlsafe_b64encode(random_bytes).decode().rstrip("=")


def _text(value: object, name: str, *, max_len: int, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(f"{name} must be a string of 1-{max_len} characters", field=name)
    if not value.isprintable():
        raise ValidationError(f"{name} must be printable characters", field=name)
    return value


def validate_inbound_fields(body: object, *, partial: bool) -> dict[str, Any]:
    """The fields of a create (`partial=False`) or PATCH body; 422 naming the field."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    for key in body:
        if key not in _FIELDS:
            raise ValidationError(f"unknown field '{key}'", field=key)
    if partial and "secret" in body:
        raise ValidationError("secret changes only through rotate-secret", field="secret")
    out: dict[str, Any] = {}
    if "name" in body or not partial:
        out["name"] = _text(body.get("name"), "name", max_len=100)
    if "target" in body:
        out["target"] = _text(body["target"], "target", max_len=200, optional=True)
    if "event" in body:
        event = parse_produced_type(body["event"])
        if event == "ping":
            raise ValidationError("an inbound webhook cannot emit ping", field="event")
        out["event"] = event
    if "verify" in body:
        if body["verify"] not in VERIFY_MODES:
            raise ValidationError(
                f"verify must be one of {', '.join(VERIFY_MODES)}", field="verify"
            )
        out["verify"] = body["verify"]
    if "secret" in body and body["secret"] is not None:
        secret = body["secret"]
        if not isinstance(secret, str) or not 8 <= len(secret) <= 256 or not secret.isprintable():
            raise ValidationError("secret must be 8-256 printable characters", field="secret")
        out["secret"] = secret
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise ValidationError("active must be true or false", field="active")
        out["active"] = body["active"]
    return out


def verify_call(
    mode: str, secret: str, headers: Mapping[str, str], body: bytes, *, now: float
) -> None:
    """Raises Unauthorized unless the call proves it knows the secret under `mode`.

    `headers` must look names up case-insensitively (aiohttp's request headers do)."""
    if mode == "none":
        return
    if mode == "secret_header":
        given = headers.get(SECRET_HEADER)
        if given is None:
            raise Unauthorized(f"the {SECRET_HEADER} header is missing")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode("utf-8")):
            raise Unauthorized(f"the {SECRET_HEADER} header is wrong")
        return
    if mode == "github":
        header = headers.get("X-Hub-Signature-256")
        if not header:
            raise Unauthorized("the X-Hub-Signature-256 header is missing")
        if not verify_github(secret, body, header):
            raise Unauthorized("the X-Hub-Signature-256 signature does not match the body")
        return
    if mode == "standard":
        msg_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signature = headers.get("webhook-signature")
        if not msg_id or not stamp or not signature:
            raise Unauthorized(
                "the webhook-id, webhook-timestamp and webhook-signature headers are required"
            )
        try:
            moment = int(stamp)
        except ValueError:
            raise Unauthorized("webhook-timestamp must be an integer") from None
        if abs(now - moment) > STANDARD_TOLERANCE_S:
            raise Unauthorized("webhook-timestamp is more than 5 minutes from now")
        if not verify_standard(secret, msg_id, moment, body, signature):
            raise Unauthorized("the webhook-signature does not match the body")
        return
    raise ValueError(f"unknown verify mode {mode!r}")


def idempotency_key(mode: str, headers: Mapping[str, str]) -> str | None:
    """`Idempotency-Key`, else (under `standard`) `webhook-id`; 422 if unusable."""
    key = headers.get(IDEMPOTENCY_HEADER)
    name = IDEMPOTENCY_HEADER
    if key is None and mode == "standard":
        key, name = headers.get("webhook-id"), "webhook-id"
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(
            f"{name} must be 1-{MAX_IDEMPOTENCY_KEY} printable characters", field=name
        )
    return key


def _json_object(raw: bytes) -> dict[str, Any]:
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    return value


# Senders that do not say what they send: their body is taken if it is a JSON object.
_UNTYPED = ("text/plain", "application/octet-stream")


def parse_call_body(content_type: str, raw: bytes) -> dict[str, Any]:
    """The call's body as a JSON object. JSON and forms are taken (a form whose only field
    `payload` holds a JSON object is that object, as GitHub and Slack send forms); an
    empty body is `{}`; a `text/plain` or `application/octet-stream` body is taken when it
    is a JSON object. A form body that is plainly JSON (what `curl -d '{...}'` sends
    without a Content-Type) is read as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not raw.strip():
        if media in ("", "application/json", "application/x-www-form-urlencoded", *_UNTYPED) or (
            media.endswith("+json")
        ):
            return {}
        raise UnsupportedMediaType(f"Content-Type {media!r} is not JSON or a form")
    if media in ("", "application/json") or media.endswith("+json"):
        return _json_object(raw)
    if media in _UNTYPED:
        try:
            return _json_object(raw)
        except HooklineError:
            raise UnsupportedMediaType(
                f"Content-Type {media!r} with a body that is not a JSON object"
            ) from None
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not application/json or application/x-www-form-urlencoded"
        )
    if raw.lstrip().startswith(b"{"):
        return _json_object(raw)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not a valid url-encoded form") from None
    form: dict[str, Any] = {}
    for name, value in pairs:
        held = form.get(name)
        if held is None:
            form[name] = value
        elif isinstance(held, list):
            held.append(value)
        else:
            form[name] = [held, value]
    if list(form) == ["payload"] and isinstance(form["payload"], str):
        try:
            inner = parse_json(form["payload"].encode())
        except HooklineError:
            return form
        if isinstance(inner, dict):
            return inner
    return form


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers the log keeps: credentials redacted; a repeated name keeps its last."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        secret = any(word in lower for word in _SECRET_WORDS) or lower == "webhook-signature"
        # Plain str (not aiohttp's istr), as PostgreSQL's jsonb takes it (see clean_text).
        out[clean_text(str(name))] = REDACTED if secret else clean_text(str(value))
    return out


def logged_body(raw: bytes) -> str:
    """The body as the log keeps it: UTF-8 text cut at 16 KiB (never mid-character), with
    what PostgreSQL's text refuses (NUL) replaced."""
    return clean_text(raw[:LOGGED_BODY_BYTES].decode("utf-8", "ignore"))


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Allowlist) -> str | None:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the nearest
    address in `X-Forwarded-For` that is not one of the trusted proxies."""
    if peer is None or not trusted or not forwarded_for:
        return peer
    try:
        if not trusted.allows(ipaddress.ip_address(peer)):
            return peer
    except ValueError:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            addr = ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a hop that is not an address: believe nothing beyond it
        if not trusted.allows(addr):
            return str(addr)
    return hops[0] if hops else peer


def inbound_payload(
    data: dict[str, Any],
    *,
    target: str | None,
    webhook_id: str,
    name: str,
    invocation_id: str,
    source_ip: str | None,
    received_at: datetime,
) -> dict[str, Any]:
    """The payload of the event an accepted call becomes (DESIGN.md section 9)."""
    message = data.get("message")
    return {
        "message": message if isinstance(message, str) else None,
        "target": target,
        "data": data,
        "inbound": {
            "webhook_id": webhook_id,
            "name": name,
            "invocation_id": invocation_id,
            "source_ip": source_ip,
            "received_at": format_timestamp(received_at),
        },
    }
