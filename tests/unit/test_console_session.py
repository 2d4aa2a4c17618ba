"""The console's session cookie and CSRF comparison, without a server."""

from __future__ import annotations

import ssl

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.api.console.session import csrf_ok, set_cookie


def _cookie(https: bool) -> str:
    context = ssl.create_default_context() if https else None
    request = make_mocked_request("POST", "/console/login", sslcontext=context)
    response = web.Response()
    set_cookie(request, response, "hookline_console", "v")
    return response.cookies["hookline_console"].OutputString()


def test_the_session_cookie_is_strict_http_only_and_secure_over_https() -> None:
    plain, tls = _cookie(https=False), _cookie(https=True)
    for cookie in (plain, tls):
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in plain and "Secure" in tls


def test_csrf_ok_needs_the_same_non_empty_string() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok("abc", "") and not csrf_ok("abc", None)
    assert not csrf_ok(None, "abc") and not csrf_ok("", "")
