"""`python -m shared.migrate`: the deploy step (a Compose job, a Helm pre-install/upgrade
hook). Applies the schema migrations, then creates or updates the Kafka topics
(HOOKLINE_KAFKA_PARTITIONS, HOOKLINE_KAFKA_REPLICATION). Safe from several pods at once:
migrations run one process at a time under an advisory lock, each in its own
transaction, and topic creation tolerates a topic another run created first."""

from __future__ import annotations

from shared.provision import main

if __name__ == "__main__":
    main()
