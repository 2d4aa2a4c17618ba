"""The sender's HTTP client: keep-alive pooled POSTs to the addresses the SSRF guard
checked, with the attempt's outcome classified into Hookline's error classes.

The host is resolved by `shared.netguard` (never by aiohttp): the connector's resolver
only hands back addresses that passed the check, so what is connected to is exactly what
was checked, while the Host header and TLS SNI keep the host name.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from shared.core.attempts import BODY_CUT, AttemptResult, clean_headers, clean_text, cut_text
from shared.core.ssrf import Address, Allowlist
from shared.netguard import BlockedTarget, ResolveFailed, checked_addresses

# A checked resolution is reused for this long (the hot path stays free of lookups).
RESOLVE_TTL_S = 30.0


@dataclass
class _Pinned:
    addresses: list[Address]
    expires: float


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that answers only from addresses the SSRF guard has checked."""

    def __init__(self, allow: Allowlist, ttl: float = RESOLVE_TTL_S) -> None:
        self._allow = allow
        self._ttl = ttl
        self._pinned: dict[str, _Pinned] = {}

    async def check(self, host: str, port: int) -> list[Address]:
        """Resolves and checks `host` (cached for the TTL); raises BlockedTarget or
        ResolveFailed. Called before every request, so the resolver below always finds
        a fresh, checked answer."""
        now = time.monotonic()
        held = self._pinned.get(host)
        if held is not None and held.expires > now:
            return held.addresses
        addresses = await checked_addresses(host, port, self._allow)
        self._pinned[host] = _Pinned(addresses, now + self._ttl)
        if len(self._pinned) > 10_000:
            self._pinned = {h: p for h, p in self._pinned.items() if p.expires > now}
        return addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        held = self._pinned.get(host)
        if held is None:
            # Never fall back to a lookup of our own: that address would be unchecked.
            raise OSError(f"{host} was not checked before connecting")
        out: list[ResolveResult] = []
        for addr in held.addresses:
            fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            out.append(
                {
                    "hostname": host,
                    "host": str(addr),
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not out:
            raise OSError(f"{host} has no checked address of family {family}")
        return out

    async def close(self) -> None:
        self._pinned.clear()


class WebhookClient:
    """POSTs deliveries; one instance (one connection pool) per sender process."""

    def __init__(self, allow: Allowlist, *, concurrency: int, max_request_bytes: int) -> None:
        self._resolver = PinnedResolver(allow)
        self._max_request_bytes = max_request_bytes
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency,
            limit_per_host=0,
            resolver=self._resolver,
            use_dns_cache=False,  # our resolver is the cache, and it is checked
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # each request has its own budget
            auto_decompress=False,
            trust_env=False,  # never route through an environment proxy
            skip_auto_headers=("Accept-Encoding",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float
    ) -> AttemptResult:
        """One attempt; never raises for anything the endpoint or network does."""
        assert self._session is not None, "start() first"
        started = time.perf_counter()

        def done(error: str | None, **kw: object) -> AttemptResult:
            ms = (time.perf_counter() - started) * 1000
            return AttemptResult(error=error, duration_ms=round(ms, 3), **kw)  # type: ignore[arg-type]

        if len(body) > self._max_request_bytes:
            return done("too_large", status=None)
        target = URL(url)
        host = target.raw_host or ""
        port = target.port or (443 if target.scheme == "https" else 80)
        resolved: str | None = None
        try:
            async with asyncio.timeout(timeout_s):
                addresses = await self._resolver.check(host, port)
                resolved = str(addresses[0])
                async with self._session.post(
                    target, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    peer = resp.connection.transport if resp.connection else None
                    peername = peer.get_extra_info("peername") if peer else None
                    if peername:
                        resolved = str(peername[0])
                    raw = await _read_cut(resp.content)
                    status = resp.status
                    # Whatever the endpoint sent must stay storable (no NUL, no
                    # surrogate-escaped bytes): the log writer cannot skip a row.
                    rheaders = clean_headers(resp.headers)
        except BlockedTarget:
            return done("blocked", status=None)
        except ResolveFailed:
            return done("dns", status=None)
        except TimeoutError:
            return done("timeout", status=None, resolved_ip=resolved)
        except (aiohttp.ClientSSLError, ssl.SSLError):
            return done("tls", status=None, resolved_ip=resolved)
        except aiohttp.ClientConnectorDNSError:
            return done("dns", status=None, resolved_ip=resolved)
        except (aiohttp.ClientError, OSError):
            return done("connect", status=None, resolved_ip=resolved)
        ok = 200 <= status < 300
        return done(
            None if ok else "http_status",
            status=status,
            headers=rheaders,
            body=clean_text(cut_text(raw)),
            resolved_ip=resolved,
        )


async def _read_cut(content: aiohttp.StreamReader) -> bytes:
    """At most BODY_CUT bytes of the response; a longer body is not drained (the
    connection is then closed rather than reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < BODY_CUT:
        chunk = await content.read(BODY_CUT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
