"""`python -m shared.provision`: applies migrations and creates Kafka topics, idempotently."""

from __future__ import annotations

import asyncio
import sys

from shared.config import ConfigError, Settings
from shared.db import connect, migrate
from shared.kafka import ensure_topics, topic_specs, wait_for_kafka


async def provision(settings: Settings) -> None:
    conn = await connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"[hookline] migrations applied: {', '.join(applied) or 'none (up to date)'}")
    await wait_for_kafka(settings.kafka_bootstrap)
    created = await ensure_topics(
        settings.kafka_bootstrap, topic_specs(settings.kafka_partitions, settings.kafka_replication)
    )
    print(
        f"[hookline] topics created: {len(created)}"
        + (f" ({', '.join(created)})" if created else "")
    )


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    asyncio.run(provision(settings))


if __name__ == "__main__":
    main()
