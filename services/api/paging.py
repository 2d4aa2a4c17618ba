"""Keyset pages and time bounds in the API's query strings: an opaque cursor naming the
(first_at, id) a page starts after, and RFC 3339 `since`/`until`, each refused with a 422
that names the parameter."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

import orjson

from shared.core.errors import ValidationError
from shared.core.events import parse_timestamp


def parse_time(value: object, field: str) -> datetime:
    """An RFC 3339 timestamp (UTC if it has no offset), or 422 naming `field`."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field)
    try:
        moment = parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field) from None
    if not 1 < moment.year < 9999:  # PostgreSQL's range is wider, but these are mistakes
        raise ValidationError(f"{field} is out of range", field=field)
    return moment


def encode_cursor(first_at: datetime, row_id: str | uuid.UUID) -> str:
    """The cursor of a page that starts after the row (first_at, row_id)."""
    raw = orjson.dumps([first_at.astimezone(UTC).isoformat(), str(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (first_at, id) a page starts after; 422 naming `cursor` if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        first, ident = orjson.loads(raw)
        moment = datetime.fromisoformat(first)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError("cursor is not valid", field="cursor") from None
