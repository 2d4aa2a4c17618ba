"""Console sign-in: server-side sessions behind an HttpOnly, SameSite=Strict cookie, and
the CSRF token every form carries.

The cookie holds 256 random bits; the table keeps only their SHA-256. Every request
re-checks the token the session was opened with (an org token must still be live, the
admin token must still be the one in force), so a revoked token ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from services.api.auth import Principal
from shared.crypto import SecretBox
from shared.tokens import hash_token

COOKIE = "hookline_console"
LOGIN_COOKIE = "hookline_console_login"  # double-submit CSRF token of the sign-in form
LIFETIME = timedelta(hours=12)
CSRF_FIELD = "csrf"

_OPEN = (
    "INSERT INTO console_sessions (id_hash, org, token_hash, admin_hash, csrf, expires_at)"
    " VALUES ($1, $2, $3, $4, $5, now() + $6::interval)"
)
_FIND = (
    "SELECT s.org, s.admin_hash, s.csrf, s.flash,"
    " (s.token_hash IS NULL OR EXISTS (SELECT 1 FROM tokens t"
    "  WHERE t.token_hash = s.token_hash AND t.revoked_at IS NULL)) AS token_live"
    " FROM console_sessions s WHERE s.id_hash = $1 AND s.expires_at > now()"
)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class Session:
    """A signed-in console user: who (same Principal as the API's) and their CSRF token."""

    key: bytes  # the id_hash
    principal: Principal
    csrf: str
    flash: dict[str, Any] | None


class SessionStore:
    """Opens, finds and ends console sessions; one-time notices ("flash") ride on them,
    sealed with HOOKLINE_SECRET_KEY because a new secret may be one of them."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox, admin_token: str) -> None:
        self._pool = pool
        self._box = box
        self._admin_hash = hash_token(admin_token) if admin_token else None

    async def open(self, principal: Principal, token: str) -> str:
        """Starts a session for whoever `token` authenticated as; returns the cookie value."""
        cookie = secrets.token_urlsafe(32)
        await self._pool.execute("DELETE FROM console_sessions WHERE expires_at <= now()")
        await self._pool.execute(
            _OPEN,
            _digest(cookie),
            principal.org,
            None if principal.is_admin else hash_token(token),
            hash_token(token) if principal.is_admin else None,
            secrets.token_urlsafe(32),
            LIFETIME,
        )
        return cookie

    async def find(self, cookie: str | None) -> Session | None:
        """The live session of a cookie; a session whose token was revoked (or whose admin
        token changed) is ended here and None returned."""
        if not cookie or len(cookie) > 200:
            return None
        key = _digest(cookie)
        row = await self._pool.fetchrow(_FIND, key)
        if row is None:
            return None
        live = row["token_live"]
        if row["org"] is None:
            live = self._admin_hash is not None and hmac.compare_digest(
                bytes(row["admin_hash"]), self._admin_hash
            )
        if not live:
            await self.end(key)
            return None
        flash = None
        if row["flash"] is not None:
            try:
                flash = orjson.loads(self._box.open(row["flash"]))
            except (ValueError, orjson.JSONDecodeError):
                flash = None
        return Session(key, Principal(org=row["org"]), row["csrf"], flash)

    async def end(self, key: bytes) -> None:
        await self._pool.execute("DELETE FROM console_sessions WHERE id_hash = $1", key)

    async def end_for_token(self, token_id: str) -> None:
        """Ends every session opened with a token (it is being revoked)."""
        await self._pool.execute(
            "DELETE FROM console_sessions WHERE token_hash IN"
            " (SELECT token_hash FROM tokens WHERE id::text = $1)",
            token_id,
        )

    async def set_flash(self, key: bytes, notice: dict[str, Any]) -> None:
        sealed = self._box.seal(orjson.dumps(notice).decode())
        await self._pool.execute(
            "UPDATE console_sessions SET flash = $2 WHERE id_hash = $1", key, sealed
        )

    async def clear_flash(self, key: bytes) -> None:
        await self._pool.execute("UPDATE console_sessions SET flash = NULL WHERE id_hash = $1", key)


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, scoped to /console; Secure when served over https."""
    response.set_cookie(
        name,
        value,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=int(LIFETIME.total_seconds()),
    )


def csrf_ok(expected: str | None, given: object) -> bool:
    """Constant-time comparison of a form's CSRF field with the session's token."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)
