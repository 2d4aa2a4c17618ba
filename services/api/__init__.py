"""The REST API (DESIGN.md section 3): webhooks, tokens, event ingest, the delivery log."""
