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
from services.cli.deliveries import PAGE_MAX, delivery_path, since_option
from services.cli.hooks import hook_path
from services.cli.session import Session
from services.cli.times import rfc3339

# A delivery is listed by when it was first attempted, by the API's clock: start a
# little early so that a delivery made as tail starts, or a clock a bit ahead, is kept.
START_SLACK = timedelta(seconds=5)


@dataclass
class Follower:
    """What has been shown. A delivery is looked at again when its summary's `last_at`
    moves (an attempt was logged; a redelivery merely reserving a number does not move
    it), and each logged attempt is shown once, by its number."""

    seen_at: dict[str, str] = field(default_factory=dict)
    shown: dict[str, set[int]] = field(default_factory=dict)

    def changed(self, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The deliveries of a page (newest first) whose log moved, oldest first."""
        moved = []
        for d in reversed(page):
            last_at = d.get("last_at")
            if last_at is None or self.seen_at.get(d["id"]) == last_at:
                continue
            self.seen_at[d["id"]] = last_at
            moved.append(d)
        return moved

    def new_attempts(self, delivery: dict[str, Any]) -> list[dict[str, Any]]:
        """A delivery's logged attempts not shown yet, in the order they started."""
        shown = self.shown.setdefault(delivery["id"], set())
        fresh = [a for a in delivery.get("attempts") or () if a["attempt"] not in shown]
        shown.update(a["attempt"] for a in fresh)
        return sorted(fresh, key=lambda a: (a.get("started_at") or "", a["attempt"]))


def line(delivery: dict[str, Any], attempt: dict[str, Any]) -> Text:
    """time, event, ✓/✗, outcome, HTTP status, duration, attempt (and trigger), id, error."""
    outcome = attempt.get("outcome")
    http = (attempt.get("response") or {}).get("status")
    trigger = attempt.get("trigger")
    number = f"attempt {attempt['attempt']}" + (
        "" if trigger in ("auto", "retry") else f" {trigger}"
    )
    return Text.assemble(
        (output.when(attempt.get("started_at")), "dim"),
        " ",
        (f"{delivery.get('event', '?'):<24}", "cyan"),
        " ",
        output.mark(outcome),
        " ",
        output.status_text(outcome),
        " ",
        (str(http) if http is not None else "-", "bold"),
        " ",
        output.duration(attempt.get("duration_ms")),
        " ",
        (number, "dim"),
        " ",
        (delivery["id"], "dim"),
        *((" ", (attempt["error"], "red")) if attempt.get("error") else ()),
    )


@click.command()
@click.argument("hook_id", metavar="HOOK")
@since_option("Also show deliveries first attempted since then (default: from now).")
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
            for moved in follower.changed(page["deliveries"]):
                delivery = session.api.get(delivery_path(moved["id"]))
                for attempt in follower.new_attempts(delivery):
                    out.print(line(delivery, attempt))
                    printed += 1
                    if count is not None and printed >= count:
                        return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        out.print(Text("Stopped.", style="dim"))
