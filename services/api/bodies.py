"""Request parsing and JSON responses shared by the views."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from services.api.auth import Principal
from services.api.keys import SETTINGS
from shared.core.errors import BadRequest, NotFound, PayloadTooLarge, ValidationError
from shared.core.jsonbody import parse_json

API = "/api/v1"


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body: 413 over the size limit, 400 if empty or malformed."""
    limit = request.app[SETTINGS].max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    raw = await request.read()  # aiohttp stops at client_max_size; the middleware maps that
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    if not raw.strip():
        raise BadRequest("a JSON body is required")
    return parse_json(raw)


async def read_object(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object body whose keys are all in `allowed`; 422 naming the offender."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    for key in body:
        if key not in allowed:
            raise ValidationError(f"unknown field '{key}'", field=key)
    return body


def path_scope(request: web.Request, who: Principal) -> tuple[str, str | None]:
    """The org and repo a route names (`/repos/{org}/{repo}/…`), the repo None on an org's
    route (`/orgs/{org}/…`); 404 unless `who` may see the org."""
    org = path_name(request, "org")
    repo = path_name(request, "repo") if "repo" in request.match_info else None
    who.check_org(org)
    return org, repo


def path_name(request: web.Request, name: str) -> str:
    """An org or repo name from the path; names that cannot exist answer 404."""
    value = request.match_info[name]
    if (
        not 1 <= len(value) <= 100
        or not value.isprintable()
        or "/" in value
        or value in (".", "..")
    ):
        raise NotFound(f"{name} not found")
    return value


def query_int(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValidationError(f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value
