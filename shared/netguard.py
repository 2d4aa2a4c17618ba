"""SSRF guard with I/O: resolve a host once, check every address, return what to connect to."""

from __future__ import annotations

import asyncio
import socket

from shared.core.errors import BlockedTarget, ResolveFailed
from shared.core.ssrf import Address, Allowlist, check_addresses, parse_host_ip


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
