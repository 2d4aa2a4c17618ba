"""`hookline dlq list|replay` (admins): the dead letters on `hookline.dlq`, read straight
from Kafka, and sending one again under its own delivery id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import click
from aiokafka.errors import KafkaError

from services.cli import output
from services.cli.client import CliError
from services.cli.deliveries import delivery_path
from services.cli.output import json_option
from services.cli.session import Session
from shared.core.errors import MessageError
from shared.core.messages import MAX_ATTEMPT, DeliveryMessage
from shared.kafka import DELIVERIES, DLQ, REJECT_HEADER, make_consumer, make_producer, partitions_of

CLIENT_ID = "hookline-cli"
# How long to wait for Kafka before telling the user it cannot be reached.
CONNECT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: a decoded delivery, or why it would not decode."""

    partition: int
    offset: int
    at: datetime
    reason: str | None
    message: DeliveryMessage | None
    undecodable: str | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.message
        return {
            "partition": self.partition,
            "offset": self.offset,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "reason": self.reason,
            "delivery_id": m and m.delivery_id,
            "webhook_id": m and m.webhook_id,
            "org": m and m.org,
            "event_id": m and m.event_id,
            "event": m and m.event_type,
            "attempt": m and m.attempt,
            "trigger": m and m.trigger,
            "last_error": m and m.last_error,
            "undecodable": self.undecodable,
        }


async def read_dead_letters(bootstrap: str, topic: str = DLQ) -> list[DeadLetter]:
    """Every record on the topic now, oldest first per partition; commits nothing."""
    consumer = make_consumer(bootstrap, group_id=None, client_id=CLIENT_ID)
    try:
        await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_S)
        parts = await partitions_of(consumer, topic)
        if not parts:
            return []
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[DeadLetter] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                found += [_dead_letter(r) for r in records if r.offset < ends[tp]]
        return found
    finally:
        await consumer.stop()


def _dead_letter(record: Any) -> DeadLetter:
    headers = dict(record.headers or ())
    reason = headers.get(REJECT_HEADER)
    at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    try:
        message, why = DeliveryMessage.decode(record.value), None
    except MessageError as exc:
        message, why = None, str(exc)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        at=at,
        reason=reason.decode(errors="replace") if reason else None,
        message=message,
        undecodable=why,
    )


def _read(session: Session) -> list[DeadLetter]:
    bootstrap = session.settings.kafka_bootstrap
    try:
        return asyncio.run(read_dead_letters(bootstrap))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise CliError(
            f"cannot read {DLQ} from Kafka at {bootstrap}: {exc or 'timed out'}"
        ) from None


@click.group()
def dlq() -> None:
    """Dead letters (admins; reads Kafka at HOOKLINE_KAFKA_BOOTSTRAP)."""


@dlq.command("list")
@click.option("--webhook", "webhook_id", default=None, help="Only this webhook's.")
@click.option("--org", default=None, help="Only this org's.")
@click.option(
    "--limit", type=click.IntRange(1), default=50, show_default=True, help="The newest this many."
)
@json_option
@click.pass_obj
def list_dlq(
    session: Session, webhook_id: str | None, org: str | None, limit: int, as_json: bool
) -> None:
    """The dead letters on hookline.dlq, newest first."""
    found = [
        d
        for d in _read(session)
        if (webhook_id is None or (d.message and d.message.webhook_id == webhook_id))
        and (org is None or (d.message and d.message.org == org))
    ]
    found.sort(key=lambda d: (d.at, d.partition, d.offset), reverse=True)
    found = found[:limit]
    if output.printed_json({"dead_letters": [d.to_json() for d in found]}, as_json):
        return
    rows = [
        (
            output.when(d.at.isoformat()),
            j["delivery_id"] or f"(undecodable: {d.undecodable})",
            j["webhook_id"],
            j["org"],
            j["event"],
            j["attempt"],
            d.reason or j["last_error"],
        )
        for d in found
        for j in [d.to_json()]
    ]
    output.console().print(
        output.table(
            f"Dead letters on {DLQ}",
            ("dead since", "delivery", "webhook", "org", "event", "attempt", "reason"),
            rows,
        )
    )


@dlq.command("replay")
@click.argument("delivery_id", metavar="DELIVERY_ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--kafka",
    "via_kafka",
    is_flag=True,
    help="Produce to hookline.deliveries even if the delivery log has it.",
)
@click.pass_obj
def replay(session: Session, delivery_id: str, yes: bool, via_kafka: bool) -> None:
    """Send a dead delivery again, with its own delivery id (trigger manual, one attempt).

    Through the API's redeliver when the delivery log has it (it reserves the attempt
    number), else produced to hookline.deliveries as the dead message was."""
    matches = [d for d in _read(session) if d.message and d.message.delivery_id == delivery_id]
    if not matches:
        raise CliError(f"no dead letter with delivery id {delivery_id} on {DLQ}")
    dead = max(matches, key=lambda d: (d.at, d.offset))
    msg = dead.message
    assert msg is not None
    if not yes:
        click.confirm(
            f"Replay delivery {msg.delivery_id} ({msg.event_type}, org {msg.org}) to webhook "
            f"{msg.webhook_id}?",
            abort=True,
        )
    if not via_kafka:
        try:
            sent = session.api.post(delivery_path(delivery_id) + "/redeliver")
        except CliError as exc:
            # Not in the log (or no body kept there): the dead message itself still is.
            if exc.status not in (404, 409):
                raise
        else:
            click.echo(f"Replayed {sent['delivery_id']} as attempt {sent.get('attempt')} (API).")
            return
    again = replay_message(msg)
    bootstrap = session.settings.kafka_bootstrap
    try:
        asyncio.run(_produce(bootstrap, again))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise CliError(
            f"cannot produce to {DELIVERIES} at {bootstrap}: {exc or 'timed out'}"
        ) from None
    click.echo(f"Replayed {again.delivery_id} to {DELIVERIES} (Kafka).")


def replay_message(dead: DeliveryMessage) -> DeliveryMessage:
    """The dead message as a single manual attempt, due now; the sender numbers it (one
    more than the log has seen), so `attempt` is only a floor."""
    return replace(
        dead,
        attempt=min(dead.attempt + 1, MAX_ATTEMPT),
        trigger="manual",
        single=True,
        due_at=None,
        numbered=False,
        parked=False,
        last_error=None,
    )


async def _produce(bootstrap: str, msg: DeliveryMessage) -> None:
    producer = make_producer(bootstrap, client_id=CLIENT_ID)
    try:
        await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT_S)
        await asyncio.wait_for(producer.send_and_wait(DELIVERIES, msg.encode(), key=msg.key), 60)
    finally:
        await producer.stop()
