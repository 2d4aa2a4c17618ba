"""`hookline events send` (the ingest API) and `hookline inbound list|create|invocations`
(the URLs that turn third parties' calls into events)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.text import Text

from services.cli import output
from services.cli.deliveries import Paging, paging_options
from services.cli.hooks import SCOPE, scope_path
from services.cli.output import json_option
from services.cli.session import Session
from shared.core.inbound import RESULTS, VERIFY_MODES


def read_payload(text: str) -> dict[str, Any]:
    """`--payload`: JSON, or `@file` holding JSON (`@-`: standard input)."""
    if text.startswith("@"):
        name = text[1:]
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {name}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object")
    return value


@click.group()
def events() -> None:
    """Events: send one through the ingest API."""


@events.command("send")
@click.argument("repo", metavar="ORG/REPO")
@click.argument("event")
@click.option("--action", default=None, help="The action, if EVENT is only the family.")
@click.option(
    "--id", "event_id", default=None, help="The event id (a repeated id delivers nothing again)."
)
@click.option(
    "--payload",
    default="{}",
    show_default=True,
    help="The payload: JSON, or @file (@- reads standard input).",
)
@json_option
@click.pass_obj
def send_event(
    session: Session,
    repo: str,
    event: str,
    action: str | None,
    event_id: str | None,
    payload: str,
    as_json: bool,
) -> None:
    """Send EVENT (push, pull_request.opened, ...) on ORG/REPO."""
    path = scope_path(repo)
    if not path.startswith("/repos/"):
        raise click.BadParameter("expected ORG/REPO", param_hint="ORG/REPO")
    body: dict[str, Any] = {"event": event, "payload": read_payload(payload)}
    if action is not None:
        body["action"] = action
    if event_id is not None:
        body["id"] = event_id
    answer = session.api.post(path + "/events", body)
    if output.printed_json(answer, as_json):
        return
    dup = " (already accepted: nothing delivered again)" if answer.get("duplicate") else ""
    click.echo(f"Event {answer['event_id']} accepted{dup}.")


@click.group()
def inbound() -> None:
    """Inbound webhooks: list, create, and their invocation logs."""


def _state(hook: dict[str, Any]) -> Text:
    return Text("active", style="green") if hook.get("active") else Text("disabled", style="red")


@inbound.command("list")
@SCOPE
@json_option
@click.pass_obj
def list_inbound(session: Session, scope: str, as_json: bool) -> None:
    """A repository's inbound webhooks (ORG/REPO) or an org's (ORG)."""
    found = session.api.get(scope_path(scope) + "/inbound-webhooks")
    if output.printed_json(found, as_json):
        return
    rows = [
        (
            h["id"],
            h["name"],
            h["event"],
            h.get("target"),
            h["verify"],
            _state(h),
            output.when(h.get("last_triggered_at")),
            h["url"],
        )
        for h in found["inbound_webhooks"]
    ]
    output.console().print(
        output.table(
            f"Inbound webhooks of {scope}",
            ("id", "name", "event", "target", "verify", "state", "last call", "url"),
            rows,
        )
    )


@inbound.command("create")
@SCOPE
@click.option("--name", required=True)
@click.option("--target", default=None, help="Who should act on the events.")
@click.option("--event", default=None, help="The event each call emits (default agent.action).")
@click.option(
    "--verify",
    type=click.Choice(VERIFY_MODES),
    default=None,
    help="How a call proves it knows the secret (default secret_header).",
)
@click.option("--secret", default=None, help="Default: generated.")
@json_option
@click.pass_obj
def create_inbound(
    session: Session,
    scope: str,
    name: str,
    target: str | None,
    event: str | None,
    verify: str | None,
    secret: str | None,
    as_json: bool,
) -> None:
    """Create an inbound webhook; its URL and secret are shown (the secret only now)."""
    optional = {"target": target, "event": event, "verify": verify, "secret": secret}
    body = {"name": name, **{k: v for k, v in optional.items() if v is not None}}
    hook = session.api.post(scope_path(scope) + "/inbound-webhooks", body)
    if output.printed_json(hook, as_json):
        return
    out = output.print_details(
        [
            ("id", hook["id"]),
            ("name", hook["name"]),
            ("scope", output.scope_of(hook)),
            ("event", hook["event"]),
            ("target", hook.get("target")),
            ("verify", hook["verify"]),
            ("url", hook["url"]),
        ]
    )
    if hook.get("secret"):
        out.print(
            Text.assemble(("secret ", "bold"), (hook["secret"], "yellow"), " (shown only now)")
        )


@inbound.command("invocations")
@click.argument("inbound_id", metavar="ID")
@click.option("--result", type=click.Choice(RESULTS), default=None)
@paging_options("Received")
@json_option
@click.pass_obj
def invocations(
    session: Session, inbound_id: str, result: str | None, paging: Paging, as_json: bool
) -> None:
    """An inbound webhook's calls, accepted or refused, newest first."""
    path = f"/inbound-webhooks/{quote(inbound_id, safe='')}/invocations"
    query = paging.query(result=result)
    found, next_cursor = session.api.listing(path, "invocations", query, follow=paging.follow)
    if output.printed_json({"invocations": found, "next_cursor": next_cursor}, as_json):
        return
    ok = {"accepted", "duplicate"}
    rows = [
        (
            output.when(i["received_at"]),
            i["id"],
            Text("✓", style="green") if i["result"] in ok else Text("✗", style="red"),
            i["result"],
            i["status"],
            i.get("source_ip"),
            i.get("event_id"),
            ("test " if i.get("test") else "") + (i.get("error") or ""),
        )
        for i in found
    ]
    output.console().print(
        output.table(
            None, ("received", "id", "", "result", "status", "source", "event", "error"), rows
        )
    )
    output.more_hint(next_cursor)
