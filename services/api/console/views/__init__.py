"""What every console view uses: render a page, read a CSRF-checked form, redirect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from services.api.auth import Forbidden, Principal
from services.api.console.app import PREFIX, session, sessions
from services.api.console.session import CSRF_FIELD, csrf_ok


async def page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """A page for the signed-in user; a pending one-time notice is shown here, once."""
    found = session(request)
    flash = found.flash
    if flash is not None and status == 200:
        await sessions(request).clear_flash(found.key)
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            "session": found,
            "me": found.principal,
            "csrf": found.csrf,
            "flash": flash if status == 200 else None,
            "now": datetime.now(UTC),
            **context,
        },
        status=status,
    )


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form, or 403 unless it carries this session's CSRF token."""
    form = await request.post()
    if not csrf_ok(session(request).csrf, form.get(CSRF_FIELD)):
        raise Forbidden("The form has expired or did not come from this console. Try again.")
    return form


async def notice(request: web.Request, **flash: Any) -> None:
    """A one-time notice for the next page (a new secret is one)."""
    await sessions(request).set_flash(session(request).key, flash)


def see_other(path: str) -> NoReturn:
    raise web.HTTPSeeOther(PREFIX + path)


def me(request: web.Request) -> Principal:
    return session(request).principal
