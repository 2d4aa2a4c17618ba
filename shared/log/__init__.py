"""The delivery log: the append-only attempts, their per-delivery summary, the webhooks'
failure counts, retention, attempt numbering, the read queries and redelivery."""
