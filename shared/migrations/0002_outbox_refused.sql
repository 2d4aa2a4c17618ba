-- Outbox rows Kafka can never accept (larger than a message may be) are set aside rather
-- than retried forever: marked published with the reason, and kept (not pruned) for an
-- operator to inspect.
ALTER TABLE outbox ADD COLUMN refused_reason text;
