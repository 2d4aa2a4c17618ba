"""The subscription table: every webhook in memory, followed from `hookline.webhooks`.

The matcher and the senders resolve subscriptions without a database query per message:
this table reads the compacted topic from the beginning at start (so it is complete as of
startup when `start()` returns), then keeps following it in a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.core.messages import MessageError, WebhookRecord
from shared.kafka import TABLE_FETCH_WAIT_MS, WEBHOOKS, make_consumer, partitions_of

log = structlog.get_logger(component="webhook_table")

_RepoKey = tuple[str, str]
# Deleted ids remembered (so a late record cannot bring one back): the newest this many.
MAX_DELETED = 100_000
# The follower waits this long per poll: a record wakes it at once, and close() cancels it.
FOLLOW_WAIT_MS = 30_000


class WebhookTable:
    """Webhook records by id, indexed by (org, repo) for repo-level hooks and by org for
    org-level ones. A record older (lower `revision`) than the one held is ignored, and a
    deleted webhook (tombstone or `remove`) never comes back: ids are never reused."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        topic: str = WEBHOOKS,
        poll_timeout_ms: int = 500,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._topic = topic
        self._poll_timeout_ms = poll_timeout_ms
        self._by_id: dict[str, WebhookRecord] = {}
        self._by_repo: dict[_RepoKey, dict[str, WebhookRecord]] = {}
        self._by_org: dict[str, dict[str, WebhookRecord]] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def deleted(self) -> int:
        """How many deleted ids are remembered."""
        return len(self._deleted)

    def get(self, webhook_id: str) -> WebhookRecord | None:
        return self._by_id.get(webhook_id)

    def subscribers(self, org: str, repo: str | None) -> list[WebhookRecord]:
        """Active repo-level webhooks of org/repo, then active org-level webhooks of org;
        an org event (`repo` None) reaches the org-level ones only."""
        found = []
        if repo is not None:
            found = [r for r in self._by_repo.get((org, repo), {}).values() if r.active]
        found += [r for r in self._by_org.get(org, {}).values() if r.active]
        return found

    # -- local changes ---------------------------------------------------------------

    def put(self, record: WebhookRecord) -> bool:
        """Applies a record; False if ignored (older revision, or the webhook was deleted)."""
        if record.id in self._deleted:
            return False
        held = self._by_id.get(record.id)
        if held is not None:
            if record.revision < held.revision:
                return False
            self._unindex(held)
        self._by_id[record.id] = record
        if record.repo is None:
            self._by_org.setdefault(record.org, {})[record.id] = record
        else:
            self._by_repo.setdefault((record.org, record.repo), {})[record.id] = record
        self._notify()
        return True

    def remove(self, webhook_id: str) -> None:
        """Forgets a webhook for good (it was deleted)."""
        self._deleted[webhook_id] = None
        self._deleted.move_to_end(webhook_id)
        if len(self._deleted) > MAX_DELETED:
            self._deleted.popitem(last=False)
        held = self._by_id.pop(webhook_id, None)
        if held is not None:
            self._unindex(held)
        self._notify()

    def _unindex(self, record: WebhookRecord) -> None:
        if record.repo is None:
            org_bucket = self._by_org.get(record.org)
            if org_bucket is not None:
                org_bucket.pop(record.id, None)
                if not org_bucket:
                    del self._by_org[record.org]
            return
        key = (record.org, record.repo)
        repo_bucket = self._by_repo.get(key)
        if repo_bucket is not None:
            repo_bucket.pop(record.id, None)
            if not repo_bucket:
                del self._by_repo[key]

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    # -- waiting (tests, and callers that just wrote a change) -----------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once `predicate()` holds, False if `timeout` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    async def wait_for_revision(self, webhook_id: str, revision: int, timeout: float) -> bool:
        """True once the table holds `webhook_id` at `revision` or later."""

        def reached() -> bool:
            held = self._by_id.get(webhook_id)
            return held is not None and held.revision >= revision

        return await self.wait_until(reached, timeout)

    # -- following the topic ---------------------------------------------------------

    def apply(self, message: ConsumerRecord[bytes, bytes]) -> None:
        """Applies one `hookline.webhooks` message; a bad one is logged and skipped."""
        key = message.key.decode(errors="replace") if message.key is not None else None
        if message.value is None:
            if key:
                self.remove(key)
            return
        try:
            record = WebhookRecord.decode(message.value)
        except MessageError as exc:
            log.warning(
                "webhook record skipped",
                reason=exc.reason,
                partition=message.partition,
                offset=message.offset,
            )
            return
        self.put(record)

    async def start(self) -> None:
        """Loads every record up to the end offsets seen now, then follows in the background."""
        started = time.perf_counter()
        consumer = make_consumer(
            self._bootstrap,
            group_id=None,
            client_id=self._client_id,
            # Only this table's fetches use this client (end offsets have their own), so a
            # long poll delays nothing: a new record answers it at once.
            fetch_max_wait_ms=TABLE_FETCH_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            tps = await partitions_of(consumer, self._topic)
            for _ in range(50):  # a topic created a moment ago may not be in metadata yet
                if tps:
                    break
                await asyncio.sleep(0.1)
                tps = await partitions_of(consumer, self._topic)
            if not tps:
                raise RuntimeError(f"topic {self._topic} does not exist")
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=5000)
                for messages in batch.values():
                    for message in messages:
                        self.apply(message)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        # End offsets come through a client of their own: on the follower's connection the
        # request would queue behind its long-poll fetch (up to fetch_max_wait_ms).
        self._offsets = make_consumer(
            self._bootstrap, group_id=None, client_id=f"{self._client_id}-offsets"
        )
        await self._offsets.start()
        log.info(
            "webhook table loaded",
            webhooks=len(self._by_id),
            partitions=len(tps),
            load_s=round(time.perf_counter() - started, 3),
        )
        self._follow = asyncio.create_task(self._follow_loop(consumer), name="webhook-table")

    async def catch_up(self, timeout: float = 2.0) -> bool:
        """Waits until the table holds every record on the topic now; False on timeout.

        The matcher calls it per batch: a webhook created before an event was published
        (the relay sends a webhook change before any later outbox row) is then in the
        table when that event is matched."""
        consumer, offsets = self._consumer, self._offsets
        if consumer is None or offsets is None:
            return False
        tps = list(consumer.assignment())
        ends: dict[TopicPartition, int] = await offsets.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return True
            if asyncio.get_running_loop().time() >= deadline:
                log.warning("webhook table behind its topic", partitions=len(behind))
                return False
            await asyncio.sleep(0.005)

    async def _follow_loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=FOLLOW_WAIT_MS, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook table fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for messages in batch.values():
                for message in messages:
                    self.apply(message)

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
