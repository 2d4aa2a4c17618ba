-- Ingest idempotency is per org: one tenant's event ids can neither block nor reveal
-- another's.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (org, id);
