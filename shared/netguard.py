"""SSRF guard with I/O: resolve a host once, check every address, return what to connect
to; `PinnedResolver` keeps a checked answer for a while."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from shared.core.errors import BlockedTarget, ResolveFailed
from shared.core.ssrf import Address, Allowlist, check_addresses, parse_host_ip

# A checked resolution is reused for this long.
RESOLVE_TTL_S = 30.0


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an IP literal in any spelling parses directly)."""
    literal = parse_host_ip(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveFailed(f"{host}: {exc}") from None
    seen: dict[str, Address] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = parse_host_ip(str(sockaddr[0]).split("%", 1)[0])
        if ip is not None:
            seen.setdefault(str(ip), ip)
    if not seen:
        raise ResolveFailed(f"{host}: no address")
    return list(seen.values())


async def checked_addresses(host: str, port: int, allow: Allowlist) -> list[Address]:
    """Resolves and checks; raises BlockedTarget if any address is non-public and not allowed."""
    addrs = await resolve(host, port)
    reason = check_addresses(addrs, allow)
    if reason is not None:
        raise BlockedTarget(reason)
    return addrs


@dataclass(frozen=True)
class Pinned:
    """A host's checked addresses, to connect to until `expires` (monotonic time)."""

    addresses: list[Address]
    ips: frozenset[str]
    expires: float


class PinnedResolver:
    """Resolves and SSRF-checks hosts, caching a checked answer for `ttl` seconds: the
    hot path stays free of lookups, and only a checked address is ever connected to."""

    def __init__(self, allow: Allowlist, ttl: float = RESOLVE_TTL_S) -> None:
        self._allow = allow
        self._ttl = ttl
        self._pinned: dict[str, Pinned] = {}

    async def check(self, host: str, port: int) -> Pinned:
        """Raises BlockedTarget or ResolveFailed."""
        now = time.monotonic()
        held = self._pinned.get(host)
        if held is not None and held.expires > now:
            return held
        addresses = await checked_addresses(host, port, self._allow)
        held = Pinned(addresses, frozenset(str(a) for a in addresses), now + self._ttl)
        self._pinned[host] = held
        if len(self._pinned) > 10_000:
            self._pinned = {h: p for h, p in self._pinned.items() if p.expires > now}
        return held
