-- Custom headers per webhook (DESIGN.md section 12): name -> value sealed with
-- HOOKLINE_SECRET_KEY (a Fernet token, as text), like the secrets; names in clear, so a
-- read can show them with the values masked.
ALTER TABLE webhooks ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'::jsonb;
