"""Org API tokens: made by the admin, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.core.errors import NotFound, ValidationError
from shared.core.events import format_timestamp
from shared.db import translated

TOKEN_PREFIX = "hlt_"


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: what the `tokens` table keeps."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def _check_name(value: object, name: str, *, max_len: int, no_slash: bool = False) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(f"{name} must be a string of 1-{max_len} characters", field=name)
    if not value.isprintable() or (no_slash and "/" in value):
        hint = " without '/'" if no_slash else ""
        raise ValidationError(f"{name} must be printable characters{hint}", field=name)
    return value


@dataclass(frozen=True)
class Token:
    """A token as the API shows it; `token` (the plain value) is set only at creation."""

    id: str
    org: str
    name: str
    created_at: datetime
    token: str | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "org": self.org,
            "name": self.name,
            "created_at": format_timestamp(self.created_at),
        }
        if self.token is not None:
            out["token"] = self.token
        return out


class TokenStore:
    """Create, revoke and authenticate org tokens. No cache: a revoked token fails at once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translated
    async def create(self, body: object) -> Token:
        """Validates `{"org","name"}` and stores a new token; the plain value is returned once."""
        if not isinstance(body, dict):
            raise ValidationError("body must be a JSON object", field="body")
        for key in body:
            if key not in ("org", "name"):
                raise ValidationError(f"unknown field '{key}'", field=key)
        org = _check_name(body.get("org"), "org", max_len=100, no_slash=True)
        name = _check_name(body.get("name"), "name", max_len=200)
        plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = await self._pool.fetchrow(
            "INSERT INTO tokens (id, org, name, token_hash) VALUES ($1, $2, $3, $4)"
            " RETURNING id, org, name, created_at",
            uuid.uuid4(),
            org,
            name,
            hash_token(plain),
        )
        return Token(str(row["id"]), row["org"], row["name"], row["created_at"], token=plain)

    @translated
    async def revoke(self, token_id: str) -> None:
        """Marks the token revoked (idempotent); NotFound if there is no such token."""
        try:
            tid = uuid.UUID(token_id)
        except ValueError:
            raise NotFound("token not found") from None
        found = await self._pool.fetchval(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id",
            tid,
        )
        if found is None:
            raise NotFound("token not found")

    @translated
    async def authenticate(self, token: str) -> str | None:
        """The org of a live token, or None. The lookup is by hash (an index probe on a
        digest leaks nothing about the token); the digests are compared in constant time."""
        if not token or len(token) > 512:
            return None
        digest = hash_token(token)
        row = await self._pool.fetchrow(
            "SELECT org, token_hash FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
            return None
        org: str = row["org"]
        return org
