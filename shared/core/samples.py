"""What each event type means, an example payload of it, and the JSON Schema its payload
follows: the catalog's `description`, `example` and `schema` (DESIGN.md section 12), and
what `POST /webhooks/{id}/test` sends. Payloads are what a producer hands Hookline;
Hookline adds `event`, `type`, `action`, `event_id`, `created_at` and `repository`.
"""

from __future__ import annotations

import copy
from typing import Any

from .events import EVENT_TYPES, split_type

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_USER: Schema = {
    "type": "object",
    "properties": {"login": _STR, "id": _INT},
    "required": ["login"],
}
_SHA: Schema = {"type": "string", "pattern": "^[0-9a-f]{40}$"}


def _obj(props: dict[str, Schema], *required: str) -> Schema:
    return {"type": "object", "properties": props, "required": list(required)}


OCTOCAT = {"login": "octocat", "id": 583231}
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
BEFORE = "3c1b4f5b5a2e1d2f4e6a8b0c9d7e5f3a1b2c4d6e"

# family -> (schema of the payload, example payload with "{action}" where the action goes)
_FAMILIES: dict[str, tuple[Schema, dict[str, Any]]] = {
    "ping": (_obj({"zen": _STR}), {"zen": "Deliver every event, at least once."}),
    "push": (
        _obj(
            {
                "ref": _STR,
                "before": _SHA,
                "after": _SHA,
                "pusher": _USER,
                "commits": {"type": "array", "items": _obj({"id": _SHA, "message": _STR}, "id")},
            },
            "ref",
            "after",
        ),
        {
            "ref": "refs/heads/main",
            "before": BEFORE,
            "after": SHA,
            "pusher": OCTOCAT,
            "commits": [{"id": SHA, "message": "Fix the widget's border radius"}],
        },
    ),
    "create": (
        _obj({"ref": _STR, "ref_type": {"enum": ["branch", "tag"]}, "sender": _USER}, "ref"),
        {"ref": "feature/dark-mode", "ref_type": "branch", "sender": OCTOCAT},
    ),
    "delete": (
        _obj({"ref": _STR, "ref_type": {"enum": ["branch", "tag"]}, "sender": _USER}, "ref"),
        {"ref": "feature/dark-mode", "ref_type": "branch", "sender": OCTOCAT},
    ),
    "release": (
        _obj(
            {"release": _obj({"tag_name": _STR, "name": _STR, "draft": {"type": "boolean"}})},
            "release",
        ),
        {"release": {"tag_name": "v2.4.0", "name": "Widgets 2.4", "draft": False}},
    ),
    "pull_request": (
        _obj(
            {
                "number": _INT,
                "pull_request": _obj(
                    {
                        "title": _STR,
                        "state": {"enum": ["open", "closed", "merged"]},
                        "head": _STR,
                        "base": _STR,
                        "user": _USER,
                    },
                    "title",
                ),
                "sender": _USER,
            },
            "number",
            "pull_request",
        ),
        {
            "number": 42,
            "pull_request": {
                "title": "Add dark mode",
                "state": "open",
                "head": "feature/dark-mode",
                "base": "main",
                "user": OCTOCAT,
            },
            "sender": OCTOCAT,
        },
    ),
    "issue": (
        _obj(
            {
                "issue": _obj({"number": _INT, "title": _STR, "state": _STR}, "number"),
                "sender": _USER,
            },
            "issue",
        ),
        {
            "issue": {"number": 7, "title": "Widget renders twice", "state": "open"},
            "sender": OCTOCAT,
        },
    ),
    "comment": (
        _obj(
            {
                "comment": _obj({"id": _INT, "body": _STR, "user": _USER}, "body"),
                "issue": _obj({"number": _INT}, "number"),
            },
            "comment",
        ),
        {
            "comment": {"id": 1001, "body": "Looks good to me.", "user": OCTOCAT},
            "issue": {"number": 7},
        },
    ),
    "commit": (
        _obj(
            {
                "comment": _obj(
                    {"id": _INT, "body": _STR, "commit_id": _SHA, "path": _STR, "line": _INT},
                    "body",
                    "commit_id",
                )
            },
            "comment",
        ),
        {
            "comment": {
                "id": 2002,
                "body": "This loop can overflow.",
                "commit_id": SHA,
                "path": "src/widget.py",
                "line": 12,
            }
        },
    ),
    "pipeline": (
        _obj(
            {
                "pipeline": _obj({"id": _INT, "ref": _STR, "status": _STR, "url": _STR}, "id"),
                "job": _obj({"name": _STR, "status": _STR}),
            },
            "pipeline",
        ),
        {
            "pipeline": {
                "id": 812,
                "ref": "refs/heads/main",
                "status": "failed",
                "url": "https://ci.example.com/pipelines/812",
            },
            "job": {"name": "unit tests", "status": "failed"},
        },
    ),
    "star": (_obj({"sender": _USER, "stars": _INT}, "sender"), {"sender": OCTOCAT, "stars": 128}),
    "fork": (
        _obj({"forkee": _obj({"full_name": _STR}, "full_name"), "sender": _USER}, "forkee"),
        {"forkee": {"full_name": "octocat/widgets"}, "sender": OCTOCAT},
    ),
    "agent": (
        _obj(
            {
                "message": {"type": ["string", "null"]},
                "target": {"type": ["string", "null"]},
                "data": {"type": "object"},
            },
            "data",
        ),
        {
            "message": "Build 812 failed on main",
            "target": "triage-agent",
            "data": {"pipeline": 812, "branch": "main"},
        },
    ),
    "ai_review": (
        _obj(
            {
                "review": _obj(
                    {
                        "pull_request": _INT,
                        "summary": _STR,
                        "suggestions": {"type": "array", "items": _STR},
                    },
                    "pull_request",
                )
            },
            "review",
        ),
        {
            "review": {
                "pull_request": 42,
                "summary": "Two nits, one bug.",
                "suggestions": ["Guard against an empty list in render()"],
            }
        },
    ),
    "webhook": (
        _obj(
            {
                "webhook": _obj(
                    {
                        "id": _STR,
                        "url": _STR,
                        "scope": _obj({"org": _STR, "repo": {"type": ["string", "null"]}}, "org"),
                    },
                    "id",
                    "url",
                    "scope",
                ),
                "reason": _STR,
                "failure_count": {"type": "integer", "minimum": 0},
                "last_error": {"type": ["string", "null"]},
            },
            "webhook",
            "reason",
            "failure_count",
            "last_error",
        ),
        {
            "webhook": {
                "id": "5f0c2c1e-8a4b-4d2e-9b1a-6c3d2e1f0a9b",
                "url": "https://hooks.example.com/ci",
                "scope": {"org": "acme", "repo": "widgets"},
            },
            "reason": "3 consecutive failed attempts",
            "failure_count": 3,
            "last_error": "http_status 503",
        },
    ),
}

_DESCRIPTIONS: dict[str, str] = {
    "ping": "Sent to one webhook to check that it is reachable.",
    "push": "Commits were pushed to a branch or tag.",
    "create": "A branch or tag was created.",
    "delete": "A branch or tag was deleted.",
    "release": "A release was {action}.",
    "pull_request": "A pull request was {action}.",
    "issue": "An issue was {action}.",
    "comment": "A comment was {action} on an issue or pull request.",
    "commit": "Someone commented on a commit.",
    "pipeline": "A CI pipeline event: {action}.",
    "star": "The repository's star was {action}.",
    "fork": "The repository was forked.",
    "agent": "An inbound webhook was called: work for an agent or a team.",
    "ai_review": "An AI review event: {action}.",
    "webhook": "A webhook of the org is {action} (notification).",
}


def _humane(action: str | None) -> str:
    return (action or "").replace("_", " ")


def describe(full_type: str) -> str:
    family, action = split_type(full_type)
    return _DESCRIPTIONS[family].format(action=_humane(action))


def example(full_type: str) -> dict[str, Any]:
    """A realistic payload of this type (a fresh copy: callers may change it)."""
    family, action = split_type(full_type)
    payload = copy.deepcopy(_FAMILIES[family][1])
    if family == "pull_request" and action in ("closed", "merged"):
        payload["pull_request"]["state"] = action
    if family == "pipeline" and action == "run_started":
        payload["pipeline"]["status"] = "running"
    return payload


def schema(full_type: str) -> Schema:
    family, _ = split_type(full_type)
    return copy.deepcopy(_FAMILIES[family][0])


def catalog_entries() -> list[dict[str, Any]]:
    """Every type with its description, example and schema."""
    return [
        {"type": t, "description": describe(t), "example": example(t), "schema": schema(t)}
        for t in EVENT_TYPES
    ]
