"""Typed messages on Hookline's Kafka topics, with their JSON encoding and edge decoding.

Every message carries `version`; a message that will not decode raises `MessageError`
with a reason, which consumers publish to a rejected or dead-letter topic.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import MessageError, ValidationError
from .events import build_body, format_timestamp, parse_event_type, parse_produced_type
from .ids import random_uuid
from .matching import validate_filters

VERSION = 1
# uuid5 namespace for delivery ids: uuid5(NAMESPACE, f"{event_id}/{webhook_id}").
DELIVERY_NAMESPACE = uuid.UUID("5b0c1d1e-6f6f-4b6c-8e69-6e65686f6f6b")
TRIGGERS = ("auto", "retry", "manual", "recover", "ping", "test")
# The highest attempt number a delivery message may ask for (schedules allow 21).
MAX_ATTEMPT = 10_000
# C0/C1 control characters (NUL included, which PostgreSQL cannot store) and lone
# surrogates (which no UTF-8 encoder takes): never part of an id, org or repo name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(text: str) -> bool:
    """True if `text` holds a control character or a lone surrogate."""
    return _CONTROL.search(text) is not None


_NAMESPACE_BYTES = DELIVERY_NAMESPACE.bytes


def delivery_id_for(event_id: str, webhook_id: str) -> str:
    """Deterministic: the same event and webhook give the same id on every path.

    Exactly `str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{webhook_id}"))`, without
    building UUID objects (the matcher computes one per delivery)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{event_id}/{webhook_id}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _loads(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise MessageError("empty message value")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError("value is not a JSON object")
    return obj


def _str(obj: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise MessageError(f"field '{key}' must be a non-empty string")
    return value


def _text(obj: dict[str, Any], key: str) -> str:
    """A non-empty string without control characters (it ends up in the log's columns)."""
    value: str = _str(obj, key)
    if has_control(value):
        raise MessageError(f"field '{key}' must not contain control characters")
    return value


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(obj: dict[str, Any], key: str) -> str:
    """A UUID, in its canonical form."""
    value = _str(obj, key)
    if _CANONICAL_UUID.fullmatch(value):  # what Hookline writes: no UUID object needed
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise MessageError(f"field '{key}' must be a UUID") from None


def _attempt(obj: dict[str, Any]) -> int:
    value = obj.get("attempt")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPT:
        raise MessageError(f"field 'attempt' must be an integer from 1 to {MAX_ATTEMPT}")
    return value


def _moment(obj: dict[str, Any], key: str) -> float | None:
    """Epoch seconds: a finite number, or None."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MessageError(f"field '{key}' must be a finite number of epoch seconds")
    return float(value)


@dataclass(frozen=True)
class EventMessage:
    """`hookline.events`, key `org/repo`: one repository event.

    Producers publishing directly send JSON:
    `{"id"?, "event": "pull_request.opened" | "pull_request", "action"?, "org", "repo",
      "payload": {...}, "created_at"?: RFC 3339}`. `"repo": null` (given explicitly) is an
    org event: delivered to the org's org-level webhooks only, keyed by `org`.
    """

    id: str
    type: str
    org: str
    repo: str | None
    payload: dict[str, Any]
    created_at: str
    version: int = VERSION

    @property
    def key(self) -> bytes:
        if self.repo is None:
            return self.org.encode()
        return f"{self.org}/{self.repo}".encode()

    def body(self) -> dict[str, Any]:
        """What a subscriber receives (DESIGN.md section 4)."""
        return build_body(
            self.payload,
            full_type=self.type,
            event_id=self.id,
            created_at=datetime.fromisoformat(self.created_at.replace("Z", "+00:00")),
            org=self.org,
            repo=self.repo,
        )

    def to_dict(self) -> dict[str, Any]:
        # Shallow: asdict() deep-copies the payload, which costs more than encoding it.
        return {
            "id": self.id,
            "type": self.type,
            "org": self.org,
            "repo": self.repo,
            "payload": self.payload,
            "created_at": self.created_at,
            "version": self.version,
        }


def make_event(
    *,
    org: str,
    repo: str | None,
    event: object,
    action: object = None,
    payload: object,
    event_id: str | None = None,
    created_at: datetime | None = None,
    produced: bool = True,
) -> EventMessage:
    """Validates and builds an event; raises ValidationError naming the field.

    `repo` None makes an org event (org-level webhooks only). A `produced` event (one a
    producer sends) may not be of a family only Hookline emits."""
    full = (parse_produced_type if produced else parse_event_type)(event, action)
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object", field="payload")
    names = (("org", org),) if repo is None else (("org", org), ("repo", repo))
    for name, value in names:
        if not isinstance(value, str) or not value or "/" in value or len(value) > 100:
            raise ValidationError(f"{name} must be 1-100 characters without '/'", field=name)
        if has_control(value):
            raise ValidationError(f"{name} must not contain control characters", field=name)
    if event_id is not None and (not isinstance(event_id, str) or not 1 <= len(event_id) <= 200):
        raise ValidationError("id must be a string of 1-200 characters", field="id")
    if event_id is not None and has_control(event_id):
        raise ValidationError("id must not contain control characters", field="id")
    moment = created_at or datetime.now(UTC)
    return EventMessage(
        id=event_id or random_uuid(),
        type=full,
        org=org,
        repo=repo,
        payload=payload,
        created_at=format_timestamp(moment),
    )


def decode_event(raw: bytes | None, *, timestamp_ms: int | None = None) -> EventMessage:
    """Decodes a `hookline.events` value; MessageError with the reason if invalid."""
    obj = _loads(raw)
    created = obj.get("created_at")
    moment: datetime | None = None
    if created is not None:
        try:
            moment = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        except ValueError:
            raise MessageError("field 'created_at' is not RFC 3339") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    elif timestamp_ms is not None:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    event = obj.get("type", obj.get("event"))
    event_id = obj.get("id")
    if event_id is None:
        # No id from the producer: derive one from the bytes, so re-consuming (or publishing
        # the same bytes twice) yields the same event id and so the same delivery ids.
        event_id = str(uuid.uuid5(DELIVERY_NAMESPACE, hashlib.sha256(raw or b"").hexdigest()))
    if "repo" not in obj:
        # Only an explicit null makes an org event: a forgotten repo is a mistake.
        raise MessageError("repo: repo must be 1-100 characters without '/' (null: org event)")
    try:
        return make_event(
            produced=False,  # the relay publishes Hookline's notifications here too
            org=obj.get("org"),  # type: ignore[arg-type]
            repo=obj["repo"],
            event=event,
            action=obj.get("action"),
            payload=obj.get("payload"),
            event_id=event_id,
            created_at=moment,
        )
    except ValidationError as exc:
        raise MessageError(f"{exc.field or 'value'}: {exc.message}") from None


def _sealed_headers(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ValueError("headers must map names to sealed values")
    return dict(raw)


@dataclass(frozen=True)
class WebhookBase:
    """What both a webhook as the API shows it and its record for the workers begin with:
    whose it is, where it goes, what it takes, in what form."""

    id: str
    org: str
    repo: str | None
    url: str
    events: tuple[str, ...]
    active: bool
    content_type: str


@dataclass(frozen=True)
class WebhookRecord(WebhookBase):
    """`hookline.webhooks` (compacted), key webhook id; a tombstone (null) means deleted.

    Secrets stay encrypted (Fernet tokens, as text) in this message.
    """

    timeout_s: int
    retry: dict[str, Any] | None
    secret_enc: str
    previous_secret_enc: str | None
    previous_expires_at: str | None
    revision: int
    version: int = VERSION
    # Custom headers: name -> value sealed like the secrets (Fernet token, as text).
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(self)  # tuples encode as arrays

    @classmethod
    def decode(cls, raw: bytes | None) -> WebhookRecord:
        obj = _loads(raw)
        try:
            return cls(
                id=_str(obj, "id"),
                org=_str(obj, "org"),
                repo=_str(obj, "repo", optional=True),
                url=_str(obj, "url"),
                events=validate_filters(obj.get("events")),
                active=bool(obj.get("active", True)),
                content_type=obj.get("content_type") or "json",
                timeout_s=int(obj.get("timeout_s") or 10),
                retry=obj.get("retry"),
                secret_enc=_str(obj, "secret_enc"),
                previous_secret_enc=obj.get("previous_secret_enc"),
                previous_expires_at=obj.get("previous_expires_at"),
                revision=int(obj.get("revision") or 0),
                version=int(obj.get("version") or VERSION),
                headers=_sealed_headers(obj.get("headers")),
            )
        except (ValidationError, TypeError, ValueError) as exc:
            raise MessageError(f"bad webhook record: {exc}") from None


_EMPTY_BODY = b',"body":{}'


@dataclass(frozen=True)
class DeliveryMessage:
    """`hookline.deliveries`, the retry tiers and `hookline.dlq`, key webhook id.

    `attempt` is the number of the attempt this message asks for (1-based); `due_at` is
    when (epoch seconds; None = now); `enqueued_at` is when the event entered Hookline,
    for latency measurement. `numbered`: `attempt` was reserved in the delivery log when
    the message was written (redeliver, recover), so the sender does not number it again.
    `parked`: deferred behind a slow webhook, not attempted, on its way back.
    """

    delivery_id: str
    webhook_id: str
    org: str
    event_id: str
    event_type: str
    body: dict[str, Any]
    attempt: int = 1
    trigger: str = "auto"
    due_at: float | None = None
    enqueued_at: float | None = None
    last_error: str | None = None
    single: bool = False  # manual, recover and ping attempts are not retried automatically
    numbered: bool = False
    parked: bool = False
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return self.webhook_id.encode()

    def encode(self) -> bytes:
        # orjson encodes dataclasses natively; asdict() would deep-copy the body first
        # (it was half of the matcher's CPU time under load).
        return orjson.dumps(self)

    def encode_with(self, body_json: bytes) -> bytes:
        """`encode()`, with the body already encoded: a fan-out encodes one event's body
        once, not once per webhook. (`,"body":{}` cannot occur inside an encoded string,
        whose quotes are escaped, so the first one is the field.)"""
        head = orjson.dumps(replace(self, body={}))
        at = head.index(_EMPTY_BODY)
        return b"".join((head[:at], b',"body":', body_json, head[at + len(_EMPTY_BODY) :]))

    @classmethod
    def decode(cls, raw: bytes | None) -> DeliveryMessage:
        obj = _loads(raw)
        try:
            trigger = obj.get("trigger") or "auto"
            if trigger not in TRIGGERS:
                raise MessageError(f"field 'trigger' must be one of {', '.join(TRIGGERS)}")
            body = obj.get("body")
            if not isinstance(body, dict):
                raise MessageError("field 'body' must be a JSON object")
            extra = obj.get("extra") or {}
            if not isinstance(extra, dict):
                raise MessageError("field 'extra' must be a JSON object")
            # Written before they were fields, the flags travelled in `extra`.
            flags = {k: bool(extra.pop(k, 0)) or bool(obj.get(k)) for k in ("numbered", "parked")}
            last_error = obj.get("last_error")
            if last_error is not None and not isinstance(last_error, str):
                raise MessageError("field 'last_error' must be a string")
            return cls(
                delivery_id=_uuid(obj, "delivery_id"),
                webhook_id=_uuid(obj, "webhook_id"),
                org=_text(obj, "org"),
                event_id=_text(obj, "event_id"),
                event_type=_text(obj, "event_type"),
                body=body,
                attempt=_attempt(obj),
                trigger=trigger,
                due_at=_moment(obj, "due_at"),
                enqueued_at=_moment(obj, "enqueued_at"),
                last_error=last_error,
                single=bool(obj.get("single", False)),
                version=int(obj.get("version") or VERSION),
                extra=extra,
                **flags,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, MessageError):
                raise
            raise MessageError(f"bad delivery message: {exc}") from None
