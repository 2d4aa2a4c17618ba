"""Saturating HTTP loads from wrk (Debian's package `wrk`), for the phases whose figure is
one process's capacity: the inbound edge's calls/s and the API's ingest.

A Python client on this 2-core machine spends about as much CPU per request as the
server it measures (~17 % of a core at 900 calls/s), and takes it from the same two
cores; wrk, in C, spends a few percent. Each request's body is the template with `{seq}`
replaced by a number unique within the run, so no two calls carry the same body.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

THREADS = 2
SEQ = "{seq}"

# Each thread numbers its requests from its own base; `response` counts answers by
# status; `done` sums the threads' counts into one JSON line.
_LUA = """
local threads = {}
function setup(thread)
  thread:set("base", #threads * 1000000000)
  table.insert(threads, thread)
end
function init(args)
  n = 0
  statuses = {}
end
local parts = %(parts)s
local headers = %(headers)s
function request()
  n = n + 1
  local seq = tostring(base + n)
  local body = table.concat(parts, seq)
  return wrk.format("POST", nil, headers, body)
end
function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, count in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local counts = {}
  for status, count in pairs(total) do
    table.insert(counts, string.format('"%%d": %%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"seconds": %%f, "statuses": {%%s}, "p50_ms": %%f, "p99_ms": %%f,'
    .. ' "errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}}\\n',
    summary.duration / 1e6, table.concat(counts, ", "),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one run of wrk saw."""

    seconds: float
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def figures(self, accepted: int, rate_key: str) -> dict[str, Any]:
        """The run as a phase records it: `accepted` answers per second (under
        `rate_key`), how many, the rest by kind, and the latency percentiles."""
        return {
            rate_key: round(self.count(accepted) / self.seconds, 1),
            "window_s": round(self.seconds, 1),
            "accepted": self.count(accepted),
            "refused": self.refused(accepted),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }

    def refused(self, accepted: int) -> dict[str, int]:
        """Answers other than `accepted`, and socket errors, by kind."""
        out = {str(s): n for s, n in self.statuses.items() if s != accepted}
        out.update({k: n for k, n in self.errors.items() if n})
        return out


def _lua_string(text: str) -> str:
    # A Lua long string cannot be ended by its content with level-N brackets it lacks.
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def script(body_template: str, headers: dict[str, str]) -> str:
    """The Lua script of a load posting `body_template` (with `{seq}` numbered)."""
    parts = "{" + ", ".join(_lua_string(p) for p in body_template.split(SEQ)) + "}"
    pairs = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    return _LUA % {"parts": parts, "headers": "{" + pairs + "}"}


def parse(output: str) -> WrkResult:
    """The result line of `script`'s `done`."""
    for line in output.splitlines():
        if line.startswith("WRK_RESULT "):
            data = orjson.loads(line.removeprefix("WRK_RESULT "))
            return WrkResult(
                seconds=data["seconds"],
                statuses={int(s): n for s, n in data["statuses"].items()},
                p50_ms=round(data["p50_ms"], 1),
                p99_ms=round(data["p99_ms"], 1),
                errors=data["errors"],
            )
    raise RuntimeError(f"wrk printed no result: {output[-500:]!r}")


def available() -> bool:
    return shutil.which("wrk") is not None


async def run(
    url: str,
    body_template: str,
    headers: dict[str, str],
    *,
    seconds: float,
    connections: int = 32,
) -> WrkResult:
    """`connections` clients posting back to back to `url` for `seconds` (whole seconds,
    at least 1), from `THREADS` threads."""
    if not available():
        raise RuntimeError("wrk is not installed (`make bench` installs Debian's package)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script(body_template, headers))
        proc = await asyncio.create_subprocess_exec(
            "wrk",
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {text[-500:]!r}")
    return parse(text)
