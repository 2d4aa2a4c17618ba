-- Indexes for the delivery log's read queries (shared/deliveries.py), measured at 2M
-- attempts by tests/bench/explain_log.py.

-- A list filtered by event type reads one ordered range per type (a lateral join in
-- page_query), however rare the type, instead of filtering the webhook's whole range.
CREATE INDEX deliveries_by_webhook_event
    ON deliveries (webhook_id, event_type, first_at DESC, id DESC);

-- Stats' percentiles read duration and outcome from the index alone (an index-only scan of
-- the newest entries); last_delivery_at reads its first entry. Same key as before, so no
-- extra index to maintain on the append path.
-- On a large existing log, build it per partition (CREATE INDEX CONCURRENTLY on each, then
-- ALTER INDEX ... ATTACH PARTITION) before applying this migration, to avoid a long lock.
DROP INDEX delivery_attempts_by_webhook;
CREATE INDEX delivery_attempts_by_webhook
    ON delivery_attempts (webhook_id, started_at DESC) INCLUDE (duration_ms, outcome);
