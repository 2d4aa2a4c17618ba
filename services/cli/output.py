"""How the CLI prints: the API's JSON as is (`--json`), or rich tables and coloured
lines for a person. Colour only on a terminal (rich's rules; `NO_COLOR` is honoured)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.cli.times import short_time

F = TypeVar("F", bound=Callable[..., Any])

# A delivery's or attempt's status, as a mark and a colour.
STATUS_STYLE = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "dead": ("✗", "bold red"),
    "pending": ("…", "yellow"),
    "skipped": ("-", "dim"),
    "blocked": ("✗", "magenta"),
}


# Columns of ids: never folded, so that they can be copied whole.
WHOLE = frozenset({"id", "delivery"})


def json_option(func: F) -> F:
    """`--json`: print the API's JSON instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table."
    )(func)


def console(*, stderr: bool = False) -> Console:
    # Built per command, so that it writes to the stream in force (click's test runner
    # swaps them). Piped and no COLUMNS: wide, since nothing wraps a pipe's lines (rich
    # would assume 80).
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(file=stream, highlight=False, soft_wrap=False, width=200 if wide else None)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def printed_json(value: Any, as_json: bool) -> bool:
    """With `--json`, prints `value` as the API gave it and says so: the command is done."""
    if as_json:
        print_json(value)
    return as_json


def mark(status: str | None) -> Text:
    symbol, style = STATUS_STYLE.get(status or "", ("?", ""))
    return Text(symbol, style=style)


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", ("", ""))[1])


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        if name in WHOLE:
            t.add_column(name, no_wrap=True, min_width=36)
        else:
            t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*(cell if isinstance(cell, Text) else Text(_cell(cell)) for cell in row))
    return t


def details(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table, for one object."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(key, value if isinstance(value, Text) else Text(_cell(value)))
    return t


def print_details(pairs: Iterable[tuple[str, Any]]) -> Console:
    """Prints one object's key/value table; returns the console, for what follows it."""
    out = console()
    out.print(details(pairs))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def scope_of(obj: dict[str, Any]) -> str:
    scope = obj.get("scope") or {}
    org, repo = scope.get("org", "?"), scope.get("repo")
    return f"{org}/{repo}" if repo else f"{org} (org)"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def when(text: str | None) -> str:
    return short_time(text)


def more_hint(cursor: str | None) -> None:
    if cursor:
        click.echo(f"More: --cursor {cursor} (or --all)", err=True)
