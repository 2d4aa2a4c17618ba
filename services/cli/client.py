"""The CLI's REST client: JSON over HTTP with a bearer token, each failure turned into
one `CliError` whose message is what a person should read (the API's own message and
field, or why the API could not be reached)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from shared.core.errors import HooklineError

API = "/api/v1"
# Longer than any answer the API gives; a hung API still ends the command.
TIMEOUT_S = 30.0


class CliError(HooklineError, code="cli_error"):
    """A failure to report in one line, then exit non-zero."""

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.status = status


class ApiClient:
    """Calls `{base_url}/api/v1/...` with `Authorization: Bearer <token>`."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The answer's JSON (None for 204); CliError for every failure."""
        if not self.token:
            raise CliError("HOOKLINE_TOKEN is not set (or pass --token)")
        url = self.base_url + API + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise CliError(
                f"cannot reach the Hookline API at {self.base_url}: {_why(exc)}"
            ) from None
        except TimeoutError:
            raise CliError(f"the Hookline API at {self.base_url} did not answer in time") from None
        except OSError as exc:
            raise CliError(f"cannot reach the Hookline API at {self.base_url}: {exc}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(
                f"the API at {self.base_url} answered something that is not JSON"
            ) from None

    def pages(
        self, path: str, key: str, query: Mapping[str, Any], *, follow: bool
    ) -> Iterator[dict[str, Any]]:
        """Each page of a keyset-paginated listing; with `follow`, every page through
        `next_cursor`, else the first one only."""
        params = dict(query)
        while True:
            page = self.get(path, params)
            yield page
            cursor = page.get("next_cursor")
            if not follow or not cursor or not page.get(key):
                return
            params["cursor"] = cursor

    def listing(
        self, path: str, key: str, query: Mapping[str, Any], *, follow: bool
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A listing's items, of its first page or (`follow`) of every page, and the cursor
        of the next page (None when followed to the end)."""
        found: list[dict[str, Any]] = []
        next_cursor = None
        for page in self.pages(path, key, query, follow=follow):
            found += page[key]
            next_cursor = page.get("next_cursor")
        return found, None if follow else next_cursor


def _why(exc: urllib.error.URLError) -> str:
    reason = exc.reason
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is it running? set HOOKLINE_URL)"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    return str(reason)


def _api_error(exc: urllib.error.HTTPError) -> CliError:
    """The API's `{"error":{"code","message","field"?}}`, or the bare status."""
    status = exc.code
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
    except (ValueError, AttributeError, OSError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    field = error.get("field") if isinstance(error, dict) else None
    text = f"{status}: {message or exc.reason}"
    if field:
        text += f" (field: {field})"
    if status == 401:
        text += " - check HOOKLINE_TOKEN"
    return CliError(text, status=status, field=field)
