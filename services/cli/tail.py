"""`hookline tail HOOK`: follows a webhook's new deliveries live, one coloured line per
attempt made, by polling the delivery log. Ctrl-C stops it cleanly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.text import Text

from services.cli import output
from services.cli.client import CliError
from services.cli.deliveries import MOMENT, PAGE_MAX, delivery_path
from services.cli.hooks import hook_path
from services.cli.session import Session
from services.cli.times import rfc3339

# A delivery is listed by when it was first attempted, by the API's clock: start a
# little early so that a delivery made as tail starts, or a clock a bit ahead, is kept.
START_SLACK = timedelta(seconds=5)


@dataclass
class Follower:
    """Which attempts have been shown: a delivery is shown again when its log gains an
    attempt (its `last_at` moves), not when a redelivery merely reserves a number."""

    shown: dict[str, str | None] = field(default_factory=dict)

    def fresh(self, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        new = []
        for d in reversed(page):  # oldest first, as they happened
            if d.get("last_at") is None or self.shown.get(d["id"]) == d["last_at"]:
                continue
            self.shown[d["id"]] = d["last_at"]
            new.append(d)
        return new


def line(d: dict[str, Any], duration_ms: float | None) -> Text:
    status = d.get("status")
    http = d.get("last_status")
    return Text.assemble(
        (output.when(d.get("last_at")), "dim"),
        " ",
        (f"{d.get('event', '?'):<24}", "cyan"),
        " ",
        output.mark(status),
        " ",
        output.status_text(status),
        " ",
        (str(http) if http is not None else "-", "bold"),
        " ",
        output.duration(duration_ms),
        " ",
        (f"attempt {d.get('attempts')}", "dim"),
        " ",
        (d["id"], "dim"),
        *((" ", (d["last_error"], "red")) if d.get("last_error") else ()),
    )


@click.command()
@click.argument("hook_id", metavar="HOOK")
@click.option(
    "--since",
    type=MOMENT,
    default=None,
    help="Also show deliveries first attempted since then (default: from now).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many lines.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.pass_obj
def tail(
    session: Session,
    hook_id: str,
    since: str | None,
    interval: float,
    count: int | None,
    timeout: float | None,
) -> None:
    """Follow a webhook's deliveries live: time, event, ✓/✗, status, HTTP status,
    duration and attempts, one line per attempt. Ctrl-C stops."""
    path = hook_path(hook_id)
    hook = session.api.get(path)  # a wrong id fails now, not silently later
    start = since or rfc3339(datetime.now(UTC) - START_SLACK)
    out = output.console()
    out.print(Text(f"Following {hook['url']} ({hook['id']}); Ctrl-C stops.", style="dim"))
    follower = Follower()
    printed = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            page = session.api.get(path + "/deliveries", {"since": start, "limit": PAGE_MAX})
            for d in follower.fresh(page["deliveries"]):
                out.print(line(d, _last_duration(session, d["id"])))
                printed += 1
                if count is not None and printed >= count:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        out.print(Text("Stopped.", style="dim"))


def _last_duration(session: Session, delivery_id: str) -> float | None:
    """The newest attempt's duration (the list does not carry it)."""
    try:
        found = session.api.get(delivery_path(delivery_id))
    except CliError:
        return None
    attempts = found.get("attempts") or []
    if not attempts:
        return None
    newest: dict[str, Any] = max(attempts, key=lambda a: a.get("attempt") or 0)
    return newest.get("duration_ms")
