"""`hookline hooks list|show|create|delete|ping`: a repo's or an org's webhooks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.text import Text

from services.cli import output
from services.cli.client import CliError
from services.cli.output import json_option
from services.cli.session import Session


def scope_path(scope: str) -> str:
    """`org/repo` to `/repos/org/repo`, `org` to `/orgs/org` (org-level)."""
    parts = scope.strip("/").split("/")
    if len(parts) == 2 and all(parts):
        return f"/repos/{quote(parts[0], safe='')}/{quote(parts[1], safe='')}"
    if len(parts) == 1 and parts[0]:
        return f"/orgs/{quote(parts[0], safe='')}"
    raise click.BadParameter("expected ORG/REPO (a repository) or ORG (org-level)")


def hook_path(hook_id: str) -> str:
    return f"/webhooks/{quote(hook_id, safe='')}"


SCOPE = click.argument("scope", metavar="ORG/REPO|ORG")


def state(hook: dict[str, Any]) -> Text:
    if hook.get("active"):
        failing = hook.get("failure_count") or 0
        if failing:
            return Text(f"failing ({failing} in a row)", style="yellow")
        return Text("active", style="green")
    reason = hook.get("disabled_reason")
    return Text(f"disabled ({reason})" if reason else "disabled", style="red")


@click.group()
def hooks() -> None:
    """Webhooks: list, show, create, delete, ping."""


@hooks.command("list")
@SCOPE
@json_option
@click.pass_obj
def list_hooks(session: Session, scope: str, as_json: bool) -> None:
    """A repository's webhooks (ORG/REPO) or an org's org-level ones (ORG)."""
    found = session.api.get(scope_path(scope) + "/webhooks")
    if output.printed_json(found, as_json):
        return
    rows = [
        (h["id"], h["url"], h.get("events"), state(h), h.get("description") or "")
        for h in found["webhooks"]
    ]
    output.console().print(
        output.table(f"Webhooks of {scope}", ("id", "url", "events", "state", "description"), rows)
    )


@hooks.command("show")
@click.argument("hook_id", metavar="HOOK")
@json_option
@click.pass_obj
def show_hook(session: Session, hook_id: str, as_json: bool) -> None:
    """One webhook, with its delivery stats."""
    hook = session.api.get(hook_path(hook_id))
    if output.printed_json(hook, as_json):
        return
    stats = session.api.get(hook_path(hook_id) + "/stats")
    out = output.print_details(_hook_pairs(hook))
    rate = stats.get("success_rate")
    out.print(
        output.details(
            [
                ("deliveries", stats.get("deliveries")),
                ("succeeded", stats.get("succeeded")),
                ("failed", stats.get("failed")),
                ("success rate", "-" if rate is None else f"{rate:.1%}"),
                (
                    "p50 / p99",
                    f"{output.duration(stats.get('p50_ms'))} / "
                    f"{output.duration(stats.get('p99_ms'))}",
                ),
            ]
        )
    )


def _hook_pairs(hook: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("id", hook["id"]),
        ("scope", output.scope_of(hook)),
        ("url", hook["url"]),
        ("events", hook.get("events")),
        ("state", state(hook)),
        ("content type", hook.get("content_type")),
        ("timeout", f"{hook.get('timeout_s')} s"),
        ("retry", hook.get("retry")),
        ("description", hook.get("description") or ""),
        ("notify email", hook.get("notify_email") or "none"),
        ("failures in a row", hook.get("failure_count", 0)),
        ("last delivery", _last_delivery(hook.get("last_delivery"))),
        *([("disabled at", output.when(hook["disabled_at"]))] if hook.get("disabled_at") else []),
        ("created", output.when(hook.get("created_at"))),
    ]


def _last_delivery(last: dict[str, Any] | None) -> str:
    """`{status, at, http_status}` as "succeeded, HTTP 200, 2 min ago"."""
    if not last:
        return "none yet"
    http = f", HTTP {last['http_status']}" if last.get("http_status") else ""
    return f"{last.get('status')}{http}, {output.when(last.get('at'))}"


@hooks.command("create")
@SCOPE
@click.option("--url", required=True, help="The payload URL (http or https).")
@click.option(
    "--event",
    "-e",
    "events",
    multiple=True,
    help="An event filter (push, pull_request, pull_request.*, *); repeatable. Default: *.",
)
@click.option("--secret", default=None, help="The signing secret (default: generated).")
@click.option("--content-type", type=click.Choice(["json", "form"]), default=None)
@click.option("--timeout", "timeout_s", type=int, default=None, help="Seconds, 1-30.")
@click.option("--description", default=None)
@click.option("--inactive", is_flag=True, help="Create it disabled.")
@json_option
@click.pass_obj
def create_hook(
    session: Session,
    scope: str,
    url: str,
    events: tuple[str, ...],
    secret: str | None,
    content_type: str | None,
    timeout_s: int | None,
    description: str | None,
    inactive: bool,
    as_json: bool,
) -> None:
    """Create a webhook on ORG/REPO, or an org-level one on ORG. Its secret is shown
    only now."""
    body: dict[str, Any] = {"url": url, "events": list(events) or ["*"]}
    optional = {
        "secret": secret,
        "content_type": content_type,
        "timeout_s": timeout_s,
        "description": description,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if inactive:
        body["active"] = False
    hook = session.api.post(scope_path(scope) + "/webhooks", body)
    if output.printed_json(hook, as_json):
        return
    out = output.print_details(_hook_pairs(hook))
    out.print(Text.assemble(("secret ", "bold"), (hook["secret"], "yellow"), " (shown only now)"))


@hooks.command("delete")
@click.argument("hook_id", metavar="HOOK")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete_hook(session: Session, hook_id: str, yes: bool) -> None:
    """Delete a webhook (its deliveries stay in the log)."""
    if not yes:
        hook = session.api.get(hook_path(hook_id))
        click.confirm(f"Delete webhook {hook['id']} ({hook['url']})?", abort=True)
    session.api.delete(hook_path(hook_id))
    click.echo(f"Deleted webhook {hook_id}.")


@hooks.command("ping")
@click.argument("hook_id", metavar="HOOK")
@json_option
@click.pass_obj
def ping_hook(session: Session, hook_id: str, as_json: bool) -> None:
    """Send a `ping` to this webhook alone."""
    sent = session.api.post(hook_path(hook_id) + "/ping")
    if output.printed_json(sent, as_json):
        return
    if not isinstance(sent, dict) or "delivery_id" not in sent:
        raise CliError("the API did not answer with a delivery id")
    click.echo(f"Ping queued: delivery {sent['delivery_id']}")
