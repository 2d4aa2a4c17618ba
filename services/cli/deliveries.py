"""`hookline deliveries list|show`, `hookline redeliver ID`, `hookline recover HOOK`:
the delivery log and sending from it again."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli import output
from services.cli.hooks import hook_path
from services.cli.output import F, json_option
from services.cli.session import Session
from services.cli.times import parse_moment, rfc3339

STATUSES = ("pending", "succeeded", "failed", "dead", "skipped")
PAGE_MAX = 200  # the API's largest page
RECOVER_MAX = 10_000  # the most one recover call redelivers


class Moment(click.ParamType):
    """A relative duration back from now (30m, 2h, 1d) or an RFC 3339 timestamp."""

    name = "DURATION|RFC3339"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, datetime):
            return rfc3339(value)
        try:
            return rfc3339(parse_moment(str(value), now=datetime.now(UTC)))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MOMENT = Moment()


def since_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """`--since MOMENT`: a relative duration back from now or an RFC 3339 timestamp."""
    return click.option("--since", type=MOMENT, required=required, help=help)


@dataclass(frozen=True)
class Paging:
    """A keyset-paginated listing's window and page: --since, --until, --limit, --cursor
    and --all (`follow`)."""

    since: str | None
    until: str | None
    limit: int
    cursor: str | None
    follow: bool

    def query(self, **filters: str | None) -> dict[str, Any]:
        window = {"since": self.since, "until": self.until}
        return {**filters, **window, "limit": self.limit, "cursor": self.cursor}


def paging_options(compared: str) -> Callable[[F], F]:
    """The options of a paginated listing, handed to the command as one `paging`;
    `compared` is what --since and --until bound ("First attempted")."""
    options = [
        since_option(f"{compared} at or after."),
        click.option("--until", type=MOMENT, default=None, help=f"{compared} before."),
        click.option(
            "--limit",
            type=click.IntRange(1, PAGE_MAX),
            default=50,
            show_default=True,
            help="Page size.",
        ),
        click.option("--cursor", default=None, help="The `next_cursor` of the previous page."),
        click.option("--all", "follow", is_flag=True, help="Follow next_cursor to the last page."),
    ]

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(
            *args: Any,
            since: str | None,
            until: str | None,
            limit: int,
            cursor: str | None,
            follow: bool,
            **kwargs: Any,
        ) -> Any:
            return func(*args, paging=Paging(since, until, limit, cursor, follow), **kwargs)

        for option in reversed(options):
            command = option(command)
        return cast(F, command)

    return decorate


def delivery_path(delivery_id: str) -> str:
    return f"/deliveries/{quote(delivery_id, safe='')}"


def delivery_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        output.when(d.get("first_at")),
        d["id"],
        d.get("event"),
        output.mark(d.get("status")),
        output.status_text(d.get("status")),
        d.get("last_status"),
        d.get("attempts"),
        d.get("last_error") or "",
    )


DELIVERY_COLUMNS = ("first", "id", "event", "", "status", "http", "attempts", "last error")


@click.group()
def deliveries() -> None:
    """The delivery log: list a webhook's deliveries, show one with its attempts."""


@deliveries.command("list")
@click.argument("hook_id", metavar="HOOK")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--event", default=None, help="An event type, a family, family.* or *.")
@paging_options("First attempted")
@json_option
@click.pass_obj
def list_deliveries(
    session: Session,
    hook_id: str,
    status: str | None,
    event: str | None,
    paging: Paging,
    as_json: bool,
) -> None:
    """A webhook's deliveries, newest first."""
    query = paging.query(status=status, event=event)
    path = hook_path(hook_id) + "/deliveries"
    found, next_cursor = session.api.listing(path, "deliveries", query, follow=paging.follow)
    if output.printed_json({"deliveries": found, "next_cursor": next_cursor}, as_json):
        return
    output.console().print(output.table(None, DELIVERY_COLUMNS, (delivery_row(d) for d in found)))
    output.more_hint(next_cursor)


@deliveries.command("show")
@click.argument("delivery_id", metavar="ID")
@click.option("--bodies", is_flag=True, help="Also print each attempt's headers and bodies.")
@json_option
@click.pass_obj
def show_delivery(session: Session, delivery_id: str, bodies: bool, as_json: bool) -> None:
    """One delivery with every attempt."""
    found = session.api.get(delivery_path(delivery_id))
    if output.printed_json(found, as_json):
        return
    out = output.print_details(
        [
            ("delivery", found["id"]),
            ("webhook", found["webhook_id"]),
            ("event", f"{found['event']} ({found['event_id']})"),
            ("status", output.status_text(found["status"])),
        ]
    )
    attempts = found["attempts"]
    rows = [
        (
            a["attempt"],
            a.get("trigger"),
            output.when(a.get("started_at")),
            output.mark(a.get("outcome")),
            a.get("outcome"),
            a["response"].get("status"),
            output.duration(a.get("duration_ms")),
            a.get("error") or "",
            a.get("resolved_ip"),
        )
        for a in attempts
    ]
    out.print(
        output.table(
            "Attempts",
            ("#", "trigger", "started", "", "outcome", "http", "duration", "error", "ip"),
            rows,
        )
    )
    if bodies:
        for a in attempts:
            out.rule(f"attempt {a['attempt']}")
            out.print(output.details(list(a["request"]["headers"].items())))
            out.print(a["request"].get("body") or "", markup=False)
            out.print(f"-> {a['response'].get('status')}", markup=False)
            out.print(output.details(list(a["response"]["headers"].items())))
            out.print(a["response"].get("body") or "", markup=False)


@click.command()
@click.argument("delivery_id", metavar="ID")
@json_option
@click.pass_obj
def redeliver(session: Session, delivery_id: str, as_json: bool) -> None:
    """Send a delivery again: same delivery id, the next attempt number, trigger manual."""
    sent = session.api.post(delivery_path(delivery_id) + "/redeliver")
    if output.printed_json(sent, as_json):
        return
    click.echo(f"Redelivering {sent['delivery_id']} as attempt {sent.get('attempt')}.")


@click.command()
@click.argument("hook_id", metavar="HOOK")
@since_option(
    "Failed and dead deliveries first attempted since: 2h, 1d or RFC 3339.", required=True
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the redeliveries with a progress bar until none is pending.",
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to follow them at most.",
)
@json_option
@click.pass_obj
def recover(
    session: Session, hook_id: str, since: str, wait: bool, timeout: float, as_json: bool
) -> None:
    """Redeliver every failed or dead delivery of a webhook since a moment (at most
    10,000 a call), and follow them until they are no longer pending."""
    path = hook_path(hook_id)
    before = _pending(session, path, since) if wait else 0
    answer = session.api.post(path + "/recover", {"since": since})
    count = int(answer["count"])
    if as_json:
        output.print_json(answer)
    else:
        click.echo(f"Recovering {count} deliveries of {hook_id} since {since}.")
    if count >= RECOVER_MAX:
        click.echo(f"At most {RECOVER_MAX:,} a call: run it again once these are done.", err=True)
    if not wait or count == 0:
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # On stderr, so that stdout stays the answer (JSON with --json). On a terminal the bar
    # redraws in place; otherwise it prints once, at the end.
    with Progress(*columns, console=output.console(stderr=True), transient=False) as bar:
        task = bar.add_task("redelivered", total=count)
        deadline = time.monotonic() + timeout
        while True:
            # Deliveries already pending before the call (waiting for a retry) are not ours.
            left = max(0, _pending(session, path, since, cap=count + before) - before)
            bar.update(task, completed=count - min(left, count))
            if left == 0 or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    if left:
        click.echo(f"{left} still pending after {timeout:.0f} s.", err=True)


def _pending(session: Session, path: str, since: str, cap: int | None = None) -> int:
    """How many of the webhook's deliveries first attempted since `since` are pending
    (counting stops past `cap`)."""
    n = 0
    query = {"status": "pending", "since": since, "limit": PAGE_MAX}
    for page in session.api.pages(path + "/deliveries", "deliveries", query, follow=True):
        n += len(page["deliveries"])
        if cap is not None and n > cap:
            break
    return n
