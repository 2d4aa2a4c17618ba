-- Inbound webhooks (DESIGN.md section 9): external systems call a generated URL and each
-- accepted call becomes a platform event, written to the outbox in the same transaction
-- as its invocation row.

CREATE TABLE inbound_webhooks (
    id           text PRIMARY KEY,                 -- 'ih_' + 192 random bits, url-safe
    org          text        NOT NULL,
    repo         text,                             -- NULL: org-level (emits org events)
    name         text        NOT NULL,
    target       text,
    event        text        NOT NULL DEFAULT 'agent.action',
    verify       text        NOT NULL DEFAULT 'secret_header'
                 CHECK (verify IN ('secret_header', 'github', 'standard', 'none')),
    secret_enc   bytea       NOT NULL,             -- encrypted with HOOKLINE_SECRET_KEY
    active       boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz                       -- kept, so a deleted URL never works again
);
CREATE INDEX inbound_webhooks_scope ON inbound_webhooks (org, repo, created_at)
    WHERE deleted_at IS NULL;

-- One row per call to a known inbound webhook, accepted or refused; append-only,
-- partitioned by day like the delivery log, and dropped with it by retention.
CREATE TABLE inbound_invocations (
    id                 uuid        NOT NULL,
    inbound_webhook_id text        NOT NULL,
    org                text        NOT NULL,
    received_at        timestamptz NOT NULL,
    source_ip          text,
    headers            jsonb,                      -- secrets and signatures redacted
    body               text,                       -- cut at 16 KiB
    result             text        NOT NULL,       -- accepted | duplicate | unauthorized | ...
    status             integer     NOT NULL,
    event_id           text,
    error              text,
    test               boolean     NOT NULL DEFAULT false
) PARTITION BY RANGE (received_at);
CREATE TABLE inbound_invocations_default PARTITION OF inbound_invocations DEFAULT;
CREATE INDEX inbound_invocations_by_hook
    ON inbound_invocations (inbound_webhook_id, received_at DESC, id DESC);

-- Idempotency-Key (or webhook-id under `standard`) -> the event it produced, for 24 h.
CREATE TABLE inbound_idempotency (
    inbound_webhook_id text        NOT NULL,
    key                text        NOT NULL,
    event_id           text        NOT NULL,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (inbound_webhook_id, key)
);

-- Rate-limit windows shared by every replica. Unlogged: a count needs no WAL, so a call
-- waits for no flush here, and losing the counts in a database crash only resets them.
CREATE UNLOGGED TABLE rate_limits (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL
);

-- Daily partitions of any table partitioned by day, named <parent>_YYYYMMDD.
CREATE FUNCTION hookline_ensure_daily_partitions(parent text, days_back integer, days_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date;
    made integer := 0;
    name text;
BEGIN
    FOR d IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - days_back,
                                    (now() AT TIME ZONE 'UTC')::date + days_ahead, '1 day')::date
    LOOP
        name := parent || '_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    name, parent, d::timestamp AT TIME ZONE 'UTC',
                    (d + 1)::timestamp AT TIME ZONE 'UTC');
                made := made + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE WARNING 'partition % not created: %', name, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN made;
END $$;
SELECT hookline_ensure_daily_partitions('inbound_invocations', 1, 7);
