"""The inbound webhook form (Name, Target, Event, Verify, Secret) and the ready-to-paste
`curl` call an inbound webhook's page shows.

The form's body goes to the same InboundStore.create/update, and so the same validation,
as the REST API's; a 422 names a field, and the form shows the message next to it.
"""

from __future__ import annotations

from typing import Any

from multidict import MultiDictProxy

from shared.core.events import EVENT_TYPES
from shared.core.inbound import DEFAULT_EVENT, SECRET_HEADER
from shared.inbound import InboundWebhook

FIELDS = ("repo", "name", "target", "event", "verify", "secret")
# What each verify mode asks of a caller, as the form's select says it.
VERIFY_CHOICES = (
    ("secret_header", f"secret_header: the {SECRET_HEADER} header holds the secret"),
    ("github", "github: X-Hub-Signature-256, an HMAC of the body (what GitHub sends)"),
    ("standard", "standard: Standard Webhooks headers (webhook-id, -timestamp, -signature)"),
    ("none", "none: no verification, anyone who has the URL can call it"),
)
EVENT_CHOICES = tuple(t for t in EVENT_TYPES if t != "ping")
EXAMPLE_BODY = '{"message":"Build 812 failed on main","data":{"branch":"main"}}'


def form_field(api_field: str | None) -> str:
    return api_field if api_field in FIELDS else "form"


def blank(repo: str | None) -> dict[str, Any]:
    return {
        "repo": repo or "",
        "name": "",
        "target": "",
        "event": DEFAULT_EVENT,
        "verify": "secret_header",
    }


def values_of(hook: InboundWebhook) -> dict[str, Any]:
    return {
        "repo": hook.repo or "",
        "name": hook.name,
        "target": hook.target or "",
        "event": hook.event,
        "verify": hook.verify,
    }


def submitted(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The form's values as typed, to show again beside its errors (never the secret)."""

    def text(name: str) -> str:
        value = form.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    return {
        "repo": text("repo"),
        "name": text("name"),
        "target": text("target"),
        "event": text("event") or DEFAULT_EVENT,
        "verify": text("verify") or "secret_header",
    }


def body_of(values: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    """The API body of the form's values: an empty target is none, an empty secret is a
    generated one."""
    body: dict[str, Any] = {
        "name": values["name"],
        "target": values["target"] or None,
        "event": values["event"],
        "verify": values["verify"],
    }
    if secret:
        body["secret"] = secret
    return body


def changes(hook: InboundWebhook, body: dict[str, Any]) -> dict[str, Any]:
    """Only what the edit changed."""
    current = {"name": hook.name, "target": hook.target, "event": hook.event, "verify": hook.verify}
    return {k: v for k, v in body.items() if current.get(k) != v}


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def curl_example(url: str, verify: str) -> str:
    """A call the hook accepts, in shell; the secret stays a `$SECRET` placeholder."""
    quoted = _shell_quote(url)
    body = _shell_quote(EXAMPLE_BODY)
    json_header = "  -H 'Content-Type: application/json' \\\n"
    if verify == "github":
        return (
            f"BODY={body}\n"
            'SIG=$(printf \'%s\' "$BODY" | openssl dgst -sha256 -hmac "$SECRET"'
            " | sed 's/^.* //')\n"
            f"curl -X POST {quoted} \\\n"
            '  -H "X-Hub-Signature-256: sha256=$SIG" \\\n'
            f"{json_header}"
            '  -d "$BODY"'
        )
    if verify == "standard":
        return (
            f"BODY={body}\n"
            "ID=msg_$(date +%s%N); TS=$(date +%s)\n"
            "KEY=$(printf '%s' \"${SECRET#whsec_}\" | base64 -d | od -An -tx1 | tr -d ' \\n')\n"
            "SIG=$(printf '%s' \"$ID.$TS.$BODY\" | openssl dgst -sha256 -mac HMAC"
            ' -macopt "hexkey:$KEY" -binary | base64)\n'
            f"curl -X POST {quoted} \\\n"
            '  -H "webhook-id: $ID" -H "webhook-timestamp: $TS" \\\n'
            '  -H "webhook-signature: v1,$SIG" \\\n'
            f"{json_header}"
            '  -d "$BODY"'
        )
    secret = f'  -H "{SECRET_HEADER}: $SECRET" \\\n' if verify == "secret_header" else ""
    return f"curl -X POST {quoted} \\\n{secret}{json_header}  -d {body}"
