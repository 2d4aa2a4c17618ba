"""A local webhook receiver for trying Hookline out: `make receiver` (python -m services.receiver).

Listens on 127.0.0.1 (default port 9000), prints one line per delivery (event, delivery
id, attempt, and whether the GitHub-style and the Standard Webhooks signatures verify with
`--secret` / HOOKLINE_RECEIVER_SECRET) and answers 200, or 500 for a `--fail-rate` share
of requests, to watch retries happen.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from shared.core.signing import GITHUB_HEADER, verify_github, verify_standard

DEFAULT_PORT = 9000


@dataclass(frozen=True)
class Verdict:
    """What one request carried and whether its signatures verify (None: no secret)."""

    event: str
    delivery_id: str
    attempt: str
    github: bool | None
    standard: bool | None

    def line(self, *, repeat: bool) -> str:
        def mark(ok: bool | None) -> str:
            return "unchecked (no --secret)" if ok is None else ("ok" if ok else "BAD")

        return (
            f"{self.event:<28} delivery={self.delivery_id} attempt={self.attempt}"
            f" github-sig={mark(self.github)} standard-sig={mark(self.standard)}"
            + (" (seen before)" if repeat else "")
        )


def verify(headers: Mapping[str, str], body: bytes, *, secret: str | None, prefix: str) -> Verdict:
    """Reads the delivery headers and checks both signatures against `secret`."""
    delivery_id = headers.get(f"{prefix}-Delivery", "-")
    github = standard = None
    if secret:
        # The prefixed header and GitHub's carry the same value; either may be checked.
        github = verify_github(
            secret, body, headers.get(GITHUB_HEADER) or headers.get(f"{prefix}-Signature-256")
        )
        standard = verify_standard(
            secret,
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            body,
            headers.get("webhook-signature"),
        )
    return Verdict(
        event=headers.get(f"{prefix}-Event", "-"),
        delivery_id=delivery_id,
        attempt=headers.get(f"{prefix}-Attempt", "-"),
        github=github,
        standard=standard,
    )


def make_app(
    *,
    secret: str | None,
    prefix: str = "X-Hookline",
    fail_rate: float = 0.0,
    out: Callable[[str], None] = print,
    chance: Callable[[], float] = random.random,
) -> web.Application:
    """The receiver app; `out` gets one line per request, `chance` decides failures."""
    seen: set[tuple[str, str]] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        verdict = verify(request.headers, body, secret=secret, prefix=prefix)
        key = (verdict.delivery_id, verdict.attempt)
        out(verdict.line(repeat=key in seen))
        if len(seen) < 1_000_000:
            seen.add(key)
        if fail_rate > 0 and chance() < fail_rate:
            return web.json_response({"ok": False, "reason": "--fail-rate"}, status=500)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", receive)
    return app


def _fail_rate(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--secret",
        default=os.environ.get("HOOKLINE_RECEIVER_SECRET"),
        help="the webhook's secret (default: HOOKLINE_RECEIVER_SECRET)",
    )
    parser.add_argument(
        "--fail-rate", type=_fail_rate, default=0.0, help="share of requests answered 500"
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("HOOKLINE_HEADER_PREFIX") or "X-Hookline",
        help="delivery header prefix (default: HOOKLINE_HEADER_PREFIX or X-Hookline)",
    )
    args = parser.parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    if not args.secret:
        out("no --secret given: signatures are not checked")
    app = make_app(secret=args.secret, prefix=args.prefix, fail_rate=args.fail_rate, out=out)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda _: out(f"receiver listening on http://{args.host}:{args.port}/"),
    )
    sys.exit(0)
