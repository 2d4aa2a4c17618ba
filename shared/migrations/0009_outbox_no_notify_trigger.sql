-- No NOTIFY inside producing transactions: PostgreSQL takes a global lock for a pending
-- NOTIFY at commit and holds it through the commit's WAL flush, so every transaction that
-- wrote the outbox committed one after another (measured: 464-520 ingested events/s with
-- the trigger, 852/s without). Writers now wake the relays after their commit, coalesced
-- (shared.outbox.OutboxWaker), and the relays also poll every 250 ms.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS hookline_outbox_notify();
