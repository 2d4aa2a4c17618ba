"""Sign in with a token (admin or org) and sign out."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from services.api.auth import principal_of
from services.api.console.app import PREFIX, sessions
from services.api.console.session import (
    COOKIE,
    CSRF_FIELD,
    LOGIN_COOKIE,
    csrf_ok,
    new_login_csrf,
    set_cookie,
)
from services.api.console.views import read_form, see_other, session

routes = web.RouteTableDef()


def _login_page(request: web.Request, error: str | None, status: int) -> web.Response:
    # The sign-in form has no session yet: its CSRF token is double-submitted (a cookie
    # only this site can set, SameSite=Strict, and the same value in the form).
    token = new_login_csrf()
    context: dict[str, Any] = {"csrf": token, "error": error, "session": None}
    response = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    set_cookie(request, response, LOGIN_COOKIE, token)
    return response


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    found = await sessions(request).find(request.cookies.get(COOKIE))
    if found is not None:
        see_other("/")
    return _login_page(request, None, 200)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    if not csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD)):
        return _login_page(request, "The form expired. Sign in again.", 403)
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    who = await principal_of(request, token) if 0 < len(token) <= 512 else None
    if who is None:
        return _login_page(request, "That token is not valid or has been revoked.", 401)
    cookie = await sessions(request).open(who, token)
    response = web.HTTPSeeOther(PREFIX + "/")
    set_cookie(request, response, COOKIE, cookie)
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await read_form(request)
    await sessions(request).end(session(request).key)
    response = web.HTTPSeeOther(PREFIX + "/login")
    response.del_cookie(COOKIE, path=PREFIX)
    raise response
