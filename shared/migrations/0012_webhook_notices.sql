-- Webhook health and notifications (DESIGN.md section 11).
-- notify_email: where the notices also go by mail; disabled_at: when it was turned off;
-- notices: how many notices were emitted about it, the counter their event ids carry, so a
-- transition replayed after a crash gets the same id.
ALTER TABLE webhooks ADD COLUMN notify_email text;
ALTER TABLE webhooks ADD COLUMN disabled_at timestamptz;
ALTER TABLE webhooks ADD COLUMN notices bigint NOT NULL DEFAULT 0;
UPDATE webhooks SET disabled_at = updated_at WHERE NOT active;

-- failing_notified: the current failure streak has had its webhook.failing (reset with the
-- streak); last_error: the newest failure's description, for the notices.
ALTER TABLE webhook_health ADD COLUMN failing_notified boolean NOT NULL DEFAULT false;
ALTER TABLE webhook_health ADD COLUMN last_error text;

-- Mail to send, written in the transaction of the transition it tells of (so it is never
-- lost), sent and marked by the relays' postman.
CREATE TABLE notice_mail (
    id         bigserial PRIMARY KEY,
    event_id   text        NOT NULL UNIQUE,
    webhook_id uuid        NOT NULL,
    kind       text        NOT NULL,
    recipient  text        NOT NULL,
    subject    text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    tries      integer     NOT NULL DEFAULT 0,
    next_try_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    sent_at    timestamptz
);
CREATE INDEX notice_mail_unsent ON notice_mail (next_try_at) WHERE sent_at IS NULL;
CREATE INDEX notice_mail_by_webhook ON notice_mail (webhook_id, kind, created_at DESC);
