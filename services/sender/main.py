"""The sender's composition root: `serve(settings, stop)` builds every client, runs the
consumer and the retry tiers until `stop`, then closes them in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from shared import metrics
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db import create_pool
from shared.kafka import (
    SENDER_GROUP,
    TIER_IDLE_FETCH_WAIT_MS,
    TIER_PAUSED_FETCH_WAIT_MS,
    make_consumer,
    make_hot_path_consumer,
    make_producer,
)
from shared.log.counts import fold_forever
from shared.log.numbering import AttemptNumbers
from shared.log.partitions import maintain_forever
from shared.log.writer import DeliveryLog
from shared.logging import configure_logging
from shared.runtime import run
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .balance import Balancer, PartitionLoad, assignor
from .consumer import Consuming, DeliveryConsumer
from .deliver import Deliverer, Webhooks
from .effects import Disabler, FollowUps
from .http import WebhookClient
from .offsets import Offsets
from .retry_tiers import RETRY_GROUP, RetryTiers, Topics
from .scheduler import OnFinished, Scheduler

log = structlog.get_logger(component="sender")

GROUP = SENDER_GROUP


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    topics: Topics | None = None,
    group_id: str = GROUP,
    retry_group_id: str = RETRY_GROUP,
    client_id: str | None = None,
    drain_timeout: float = 10.0,
    ready: asyncio.Event | None = None,
    maintenance_interval_s: float = 3600.0,
) -> None:
    """One sender replica until `stop` is set; `ready` is set once it has partitions. It
    also runs the delivery log's maintenance every `maintenance_interval_s`."""
    s = settings
    s.require("secret_key")
    configure_logging(s.log_level, service="sender")
    topics = topics or Topics()
    name = client_id or s.instance_name("sender")
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(s.database_url, min_size=1, max_size=8)
        stack.push_async_callback(pool.close)
        producer = make_producer(s.kafka_bootstrap, client_id=name)
        await producer.start()
        stack.push_async_callback(producer.stop)
        table = WebhookTable(s.kafka_bootstrap, client_id=f"{name}-table")
        await table.start()
        stack.push_async_callback(table.stop)
        client = WebhookClient(
            s.allowed_targets,
            concurrency=s.sender_concurrency,
            max_request_bytes=s.max_payload_bytes + 64 * 1024,
            bounded=False,  # every call already holds one of the sender's global slots
            keepalive_s=s.sender_idle_timeout_s,
            max_idle_total=s.sender_max_idle_connections,
        )
        await client.start()
        stack.push_async_callback(client.close)
        store = WebhookStore(
            pool, SecretBox(s.secret_key), allow=s.allowed_targets, max_per_repo=10**9
        )
        disabler = Disabler(s, store=store, table=table)
        delivery_log = DeliveryLog(
            pool, on_failures=disabler.on_failures, failing_after=s.failing_after_failures
        )
        await delivery_log.start()
        stack.push_async_callback(delivery_log.close)
        follow_ups = FollowUps(producer, topics, disabler, delivery_log, stop)
        deliverer = Deliverer(
            s,
            webhooks=Webhooks(table, store),
            client=client,
            numbers=AttemptNumbers(pool),
            follow_ups=follow_ups,
        )
        metrics.track_in_flight(lambda: deliverer.in_flight)
        tiers = RetryTiers(
            lambda: make_consumer(
                s.kafka_bootstrap,
                group_id=retry_group_id,
                client_id=f"{name}-retry",
                fetch_max_wait_ms=TIER_IDLE_FETCH_WAIT_MS,
                busy_fetch_wait_ms=TIER_PAUSED_FETCH_WAIT_MS,
            ),
            producer,
            stop,
            topics=topics,
        )
        await stack.enter_async_context(_task(tiers.run(), "retry-tiers", grace=5.0))
        await stack.enter_async_context(
            _task(
                maintain_forever(pool, s.retention_days, stop, interval_s=maintenance_interval_s),
                "log-maintenance",
            )
        )
        await stack.enter_async_context(_task(fold_forever(pool, stop), "count-folder"))
        load = PartitionLoad(topics.deliveries)
        kafka = make_hot_path_consumer(
            s.kafka_bootstrap,
            group_id=group_id,
            client_id=name,
            partition_assignment_strategy=(assignor(load),),
        )
        offsets = Offsets()

        def scheduler(on_finished: OnFinished) -> Scheduler:
            return Scheduler(
                deliverer,
                follow_ups,
                concurrency=s.sender_concurrency,
                per_webhook=s.sender_inflight_per_webhook,
                owns=offsets.owns,
                on_finished=on_finished,
                stop=stop,
            )

        consumer = DeliveryConsumer(
            kafka,
            producer,
            scheduler,
            # The buffer lets every global slot be busy with room to spare.
            config=Consuming(
                topics.deliveries,
                max_pending=max(8 * s.sender_concurrency, 2000),
                drain_timeout=drain_timeout,
            ),
            offsets=offsets,
            stop=stop,
            ready=ready,
        )
        kafka.subscribe([topics.deliveries], listener=consumer.listener)
        await kafka.start()
        stack.push_async_callback(_stop_consumer, kafka)
        await stack.enter_async_context(_task(Balancer(kafka, load).run(stop), "balance"))
        stack.callback(consumer.cancel)
        await consumer.run()
        # What finished is committed once its log rows are written.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await delivery_log.flush()
        await consumer.commit()
    log.info("sender stopped")


@contextlib.asynccontextmanager
async def _task(
    coro: Coroutine[Any, Any, None], name: str, *, grace: float = 0.0
) -> AsyncIterator[None]:
    """Runs `coro` beside the block; on exit gives it `grace` seconds to end (it watches
    the stop event), then cancels it."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        if grace:
            await asyncio.wait({task}, timeout=grace)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _stop_consumer(consumer: Any) -> None:
    with contextlib.suppress(KafkaError):
        await consumer.stop()


def main() -> None:
    """`python -m services.sender`."""
    run(serve)
