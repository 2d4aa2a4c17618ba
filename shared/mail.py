"""The postman: sends the `notice_mail` rows that transitions wrote (shared/notices.py)
through HOOKLINE_SMTP_URL, and marks each sent. It runs in the relay process, beside the
outbox it resembles, away from the senders' delivery path.

A row is claimed `FOR UPDATE SKIP LOCKED` (many relays share the table) and marked sent in
the same transaction after the server accepted it: a crash between the two sends that
mail again (at least once; its `Message-ID` comes from the notice's id, so a resend
carries the same one).
A refusal or an outage retries the row later, backing off up to an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import KW_ONLY, asdict, dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import asyncpg
import structlog

log = structlog.get_logger(component="postman")

_CLAIM = """
SELECT id, event_id, recipient, subject, body, tries FROM notice_mail
WHERE sent_at IS NULL AND next_try_at <= now()
ORDER BY next_try_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_SENT = "UPDATE notice_mail SET sent_at = now(), tries = tries + 1, last_error = NULL WHERE id = $1"
_FAILED = """
UPDATE notice_mail SET tries = tries + 1, last_error = $2,
    next_try_at = now() + make_interval(secs => least(power(2, tries + 1), 3600))
WHERE id = $1
"""
# Sent mail is kept a week for an operator to look at, then pruned.
_PRUNE = "DELETE FROM notice_mail WHERE sent_at < now() - interval '7 days'"


@dataclass(frozen=True)
class SmtpServer:
    """Where mail goes: `smtp://[user:password@]host[:port]` (STARTTLS when offered) or
    `smtps://` (TLS from the start)."""

    hostname: str
    port: int
    use_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname or "localhost",
            port=parts.port or (465 if tls else 25),
            use_tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def options(self) -> dict[str, Any]:
        """aiosmtplib's keyword arguments, which the fields are named after."""
        return {**asdict(self), "timeout": 30}


def message_id(event_id: str) -> str:
    """The notice's own Message-ID (short enough never to be folded): the same on a resend."""
    return f"<{uuid.uuid5(uuid.NAMESPACE_URL, event_id)}@hookline>"


def compose(row: asyncpg.Record, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row["recipient"]
    message["Subject"] = row["subject"]
    message["Message-ID"] = message_id(row["event_id"])
    message.set_content(row["body"])
    return message


@dataclass(frozen=True)
class Postman:
    """Sends due notice mail until stopped; `send_due` is one round (tests call it)."""

    pool: asyncpg.Pool
    server: SmtpServer
    _: KW_ONLY
    sender: str
    poll_s: float = 1.0
    batch: int = 20

    async def send_due(self) -> int:
        """Sends the mail that is due; returns how many the server accepted."""
        sent = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for row in await conn.fetch(_CLAIM, self.batch):
                try:
                    await aiosmtplib.send(
                        compose(row, self.sender), sender=self.sender, **self.server.options()
                    )
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    log.warning(
                        "notice mail not sent; will retry",
                        event_id=row["event_id"],
                        tries=row["tries"] + 1,
                        error=repr(exc),
                    )
                    await conn.execute(_FAILED, row["id"], repr(exc)[:500])
                    continue
                await conn.execute(_SENT, row["id"])
                log.info("notice mail sent", event_id=row["event_id"])
                sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            try:
                n = await self.send_due()
                rounds += 1
                if rounds % 3600 == 0:
                    await self.pool.execute(_PRUNE)
            except Exception as exc:  # an outage: the rows stay, try again
                log.warning("postman round failed; retrying", error=repr(exc))
                n = 0
            if n:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await stop.wait()
