-- Per-org limits (DESIGN.md section 12), set by the admin; a NULL takes the HOOKLINE_*
-- default of the process that reads it.
CREATE TABLE org_limits (
    org                   text PRIMARY KEY,
    max_webhooks_per_repo integer CHECK (max_webhooks_per_repo BETWEEN 1 AND 10000),
    max_org_webhooks      integer CHECK (max_org_webhooks BETWEEN 1 AND 10000),
    retention_days        integer CHECK (retention_days BETWEEN 1 AND 3650),
    ingest_rate_per_min   integer CHECK (ingest_rate_per_min BETWEEN 1 AND 100000000),
    inbound_rate_per_hook integer CHECK (inbound_rate_per_hook BETWEEN 1 AND 100000000),
    inbound_rate_per_org  integer CHECK (inbound_rate_per_org BETWEEN 1 AND 100000000),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
