"""Notices about a webhook's health, written in the caller's transaction: the
`webhook.*` event through the outbox and, for a webhook with `notify_email`, a row of
`notice_mail` that the relays' postman sends (shared/mail.py).

Callers make each transition a conditional UPDATE in the same transaction (the failure
count crossing its threshold, `active` flipping), so a transition commits once with its
notice. The notice's event id carries the webhook's notice counter: a relay re-publishing
the row yields the same delivery ids, and the mail row is unique by event id.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from shared.core.messages import make_event
from shared.core.notices import FAILING_MAIL_EVERY_S, Notice
from shared.kafka import EVENTS
from shared.outbox import enqueue

_BUMP = """
UPDATE webhooks SET notices = notices + 1 WHERE id = $1
RETURNING id, org, repo, url, notify_email, notices
"""

# A `failing` mail at most once an hour per webhook; the other kinds always.
_MAIL = """
INSERT INTO notice_mail (event_id, webhook_id, kind, recipient, subject, body)
SELECT $1, $2, $3, $4, $5, $6
WHERE $3 <> 'failing' OR NOT EXISTS (
    SELECT 1 FROM notice_mail WHERE webhook_id = $2 AND kind = 'failing'
    AND created_at > now() - make_interval(secs => $7))
ON CONFLICT (event_id) DO NOTHING
"""


async def emit_notice(
    conn: asyncpg.Connection,
    *,
    kind: str,
    webhook_id: str,
    reason: str,
    failure_count: int,
    last_error: str | None,
) -> Notice | None:
    """Writes the notice of a transition the caller's transaction just made; None if the
    webhook is gone."""
    row = await conn.fetchrow(_BUMP, uuid.UUID(str(webhook_id)))
    if row is None:
        return None
    notice = Notice(
        kind=kind,
        webhook_id=str(row["id"]),
        url=row["url"],
        org=row["org"],
        repo=row["repo"],
        reason=reason,
        failure_count=failure_count,
        last_error=last_error,
        seq=row["notices"],
    )
    # An org event (repo None): the matcher sends it to the org's org-level webhooks.
    event = make_event(
        produced=False,
        org=notice.org,
        repo=None,
        event=notice.event_type,
        payload=notice.payload(),
        event_id=notice.event_id,
    )
    await enqueue(conn, topic=EVENTS, key=event.key, value=orjson.dumps(event.to_dict()))
    if row["notify_email"]:
        await conn.execute(
            _MAIL,
            notice.event_id,
            row["id"],
            kind,
            row["notify_email"],
            notice.subject(),
            notice.text(),
            float(FAILING_MAIL_EVERY_S),
        )
    return notice
