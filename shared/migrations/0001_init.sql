-- Hookline's schema: outbox, webhooks, tokens, ingested events, and the delivery log.

-- Transactional outbox: rows are written in the producer's own transaction and published
-- to Kafka by the relay, which marks them published only after the broker acknowledged.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea,                       -- NULL publishes a tombstone (compacted topics)
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake relays on commit of any statement that added outbox rows (one notify per statement;
-- Postgres folds identical notifications within a transaction).
CREATE FUNCTION hookline_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookline_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION hookline_outbox_notify();

CREATE TABLE webhooks (
    id                  uuid PRIMARY KEY,
    org                 text        NOT NULL,
    repo                text,                        -- NULL: org-level webhook
    url                 text        NOT NULL,
    events              text[]      NOT NULL,
    active              boolean     NOT NULL DEFAULT true,
    content_type        text        NOT NULL DEFAULT 'json' CHECK (content_type IN ('json', 'form')),
    description         text        NOT NULL DEFAULT '',
    retry               jsonb,
    timeout_s           integer     NOT NULL DEFAULT 10 CHECK (timeout_s BETWEEN 1 AND 30),
    secret_enc          bytea       NOT NULL,        -- encrypted with HOOKLINE_SECRET_KEY
    previous_secret_enc bytea,
    previous_expires_at timestamptz,
    disabled_reason     text,
    version             bigint      NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_scope ON webhooks (org, repo, created_at);

-- Consecutive failures per webhook, for disabling (reset by any success).
CREATE TABLE webhook_health (
    webhook_id           uuid PRIMARY KEY,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    first_failure_at     timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tokens (
    id         uuid PRIMARY KEY,
    org        text        NOT NULL,
    name       text        NOT NULL,
    token_hash bytea       NOT NULL UNIQUE,         -- SHA-256 of a 256-bit random token
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Events accepted by the HTTP ingest, for idempotency by id.
CREATE TABLE events (
    id         text PRIMARY KEY,
    org        text        NOT NULL,
    repo       text        NOT NULL,
    type       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The delivery log: one row per attempt, append-only; retention drops whole partitions.
CREATE TABLE delivery_attempts (
    delivery_id      uuid        NOT NULL,
    webhook_id       uuid        NOT NULL,
    org              text        NOT NULL,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    attempt          integer     NOT NULL,
    trigger          text        NOT NULL,   -- auto | retry | manual | recover | ping
    outcome          text        NOT NULL,   -- succeeded | failed | dead | skipped
    started_at       timestamptz NOT NULL,
    duration_ms      double precision NOT NULL DEFAULT 0,
    request_headers  jsonb,
    request_body     text,
    response_status  integer,
    response_headers jsonb,
    response_body    text,
    error            text,                   -- error class, NULL on success
    resolved_ip      text,
    next_attempt_at  timestamptz
) PARTITION BY RANGE (started_at);
CREATE TABLE delivery_attempts_default PARTITION OF delivery_attempts DEFAULT;
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, started_at);
CREATE INDEX delivery_attempts_by_webhook ON delivery_attempts (webhook_id, started_at DESC);

-- One summary row per delivery, derived from its attempts by the log writer in the same
-- transaction that appends them: what list and stats queries read at millions of attempts.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    webhook_id      uuid        NOT NULL,
    org             text        NOT NULL,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    status          text        NOT NULL,   -- pending | succeeded | failed | dead | skipped
    attempts        integer     NOT NULL DEFAULT 0,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    last_error      text,
    last_status     integer,
    next_attempt_at timestamptz
);
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, first_at DESC, id DESC);
CREATE INDEX deliveries_by_webhook_status ON deliveries (webhook_id, status, first_at DESC, id DESC);

-- Daily partitions of the delivery log, created ahead by hookline_ensure_partitions().
CREATE FUNCTION hookline_ensure_partitions(days_back integer, days_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date;
    made integer := 0;
    name text;
BEGIN
    FOR d IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - days_back,
                                    (now() AT TIME ZONE 'UTC')::date + days_ahead, '1 day')::date
    LOOP
        name := 'delivery_attempts_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF delivery_attempts FOR VALUES FROM (%L) TO (%L)',
                    name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                made := made + 1;
            EXCEPTION WHEN check_violation THEN
                -- rows for that day already sit in the default partition: leave them there
                RAISE WARNING 'partition % not created: %', name, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN made;
END $$;
SELECT hookline_ensure_partitions(1, 7);
