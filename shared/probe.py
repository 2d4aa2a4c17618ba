"""`python -m shared.probe [/healthz|/readyz]`: the container image's HEALTHCHECK. Asks this
process's own health server (HOOKLINE_METRICS_PORT) and exits 0 on a 200, 1 otherwise."""

from __future__ import annotations

import sys
import urllib.request

from shared.config import ConfigError, Settings


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    try:
        port = Settings.from_env().metrics_port
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    if not port:
        sys.exit("HOOKLINE_METRICS_PORT is 0: no health server to ask")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            sys.exit(0 if r.status == 200 else 1)
    except OSError as exc:
        sys.exit(f"{path}: {exc}")


if __name__ == "__main__":
    main()
