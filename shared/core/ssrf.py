"""SSRF rules (DESIGN.md section 6): which target addresses a webhook may never reach.

The sender resolves a host itself, checks every address here and connects to the one it
checked; ``parse_host_ip`` catches IP literals in the odd spellings resolvers accept.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import idna

from .errors import ValidationError

__all__ = [
    "MAX_URL_LENGTH",
    "Address",
    "Allowlist",
    "WebhookUrl",
    "check_addresses",
    "classify",
    "normalise_host",
    "parse_host_ip",
    "validate_url",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so narrower blocks come before the blocks containing them.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("100.64.0.0/10"), "cgnat"),
    # Includes 169.254.169.254, the cloud metadata service.
    (_V4("169.254.0.0/16"), "link_local"),
    (_V4("192.0.0.0/24"), "reserved"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("192.88.99.0/24"), "reserved"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "nat64"),
    (_V6("100::/64"), "discard"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("fc00::/7"), "unique_local"),
    (_V6("fe80::/10"), "link_local"),
    (_V6("fec0::/10"), "site_local"),
    (_V6("ff00::/8"), "multicast"),
)

_V4_MAPPED = _V6("::ffff:0:0/96")
_V4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")


def _parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """Parse an IPv4 address the way BSD/glibc ``inet_aton`` does, or return None.

    One to four parts separated by dots, each decimal, octal (leading 0) or hex (0x);
    the last part fills the remaining bytes: ``127.1``, ``0x7f000001``, ``2130706433``.
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not part:
            return None
        try:
            if part[:2] in ("0x", "0X"):
                value = int(part[2:], 16) if len(part) > 2 else 0
            elif len(part) > 1 and part[0] == "0":
                value = int(part[1:], 8)
            else:
                value = int(part, 10)
        except ValueError:
            return None
        # int() accepts signs, underscores and spaces; inet_aton does not.
        if not part.isalnum():
            return None
        values.append(value)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _parse_ipv6(text: str) -> ipaddress.IPv6Address | None:
    # A zone id ("%eth0") names an interface, not a different address.
    text = text.partition("%")[0]
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def parse_host_ip(host: str) -> Address | None:
    """Return the IP address ``host`` spells, in any form a resolver accepts, else None.

    Handles dotted quads and their short, octal, hex and decimal forms (``127.1``,
    ``0177.0.0.1``, ``0x7f000001``, ``2130706433``), IPv6 with or without brackets and
    with a zone id (``[fe80::1%eth0]``). None means a hostname that must be resolved.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        return _parse_ipv6(text[1:-1])
    if ":" in text:
        return _parse_ipv6(text)
    if text.endswith("."):
        # "127.0.0.1." is still that address to some resolvers; checking it is harmless.
        text = text[:-1]
    return _parse_inet_aton(text)


def _embedded_v4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 transition address reaches, with the mechanism's name."""
    if addr in _V4_MAPPED:
        return "ipv4_mapped", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _NAT64:
        return "nat64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return "6to4", addr.sixtofour
    if addr.teredo is not None:
        return "teredo", addr.teredo[1]
    if addr in _V4_COMPATIBLE and int(addr) > 1:
        return "ipv4_compatible", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _classify_v4(addr: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_RULES:
        if addr in network:
            return reason
    return None if addr.is_global else "reserved"


def classify(addr: Address) -> str | None:
    """Return why a webhook may not reach ``addr`` (``"loopback"``, ``"cgnat"``, ...) or None.

    IPv6 transition addresses (v4-mapped, v4-compatible, NAT64, 6to4, Teredo) are judged
    by the IPv4 address they embed; the reason then names the mechanism first, e.g.
    ``"ipv4_mapped loopback"``. Anything ``ipaddress`` does not call global is
    ``"reserved"``.
    """
    if isinstance(addr, ipaddress.IPv4Address):
        return _classify_v4(addr)
    addr = ipaddress.IPv6Address(int(addr))  # drop any scope id
    for network, reason in _V6_RULES:
        if addr in network:
            return reason
    embedded = _embedded_v4(addr)
    if embedded is not None:
        kind, v4 = embedded
        inner = _classify_v4(v4)
        if inner is not None:
            return f"{kind} {inner}"
        # Deprecated (RFC 4291) and never routed as the IPv4 address it names.
        return "ipv4_compatible" if kind == "ipv4_compatible" else None
    return None if addr.is_global else "reserved"


@dataclass(frozen=True)
class Allowlist:
    """CIDRs exempt from the SSRF block (``HOOKLINE_ALLOWED_TARGETS``)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """Parse comma-separated CIDRs (blanks ignored); ValueError names a bad entry."""
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"not a CIDR: {entry!r} ({exc})") from None
        return cls(networks=tuple(networks))

    def allows(self, addr: Address) -> bool:
        """True if ``addr`` (or the IPv4 address a v4-mapped ``addr`` is) is listed."""
        candidates: list[Address] = [addr]
        if isinstance(addr, ipaddress.IPv6Address):
            addr = ipaddress.IPv6Address(int(addr))
            candidates = [addr]
            if addr.ipv4_mapped is not None:
                candidates.append(addr.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )

    def __bool__(self) -> bool:
        return bool(self.networks)


def check_addresses(addrs: Sequence[Address], allow: Allowlist) -> str | None:
    """Return None if every address may be reached, else the first refusal's reason.

    An address may be reached when it is public or in ``allow``. An empty list is refused:
    there is nothing that was checked to connect to.
    """
    if not addrs:
        return "no address to check"
    for addr in addrs:
        if allow.allows(addr):
            continue
        reason = classify(addr)
        if reason is not None:
            return f"{addr} is {reason}"
    return None


def _url_error(message: str) -> ValidationError:
    return ValidationError(message, field="url")


@dataclass(frozen=True)
class WebhookUrl:
    """A webhook URL as both creation checks it and the sender sends to it: one parse."""

    scheme: str  # "http" or "https"
    host: str  # ASCII: lower case, IDNA A-labels; an IP literal as written, no brackets
    port: int  # as given, or the scheme's default
    explicit_port: bool  # a non-default port was given (the Host header names it)
    path: str  # path and query as sent (at least "/"), non-ASCII percent-encoded

    @property
    def netloc(self) -> str:
        """What the Host header holds."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host


# A DNS label in ASCII: letters, digits, hyphens inside, underscores (seen in real names).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
# Characters kept as they are in a path or query; anything else is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


def normalise_host(host: str) -> str:
    """The host a webhook's requests go to, in ASCII (ValueError if it is not a valid
    name): lower case, each non-ASCII label IDNA 2008-encoded without mappings, so that a
    zero-width space, full-width letters or a malformed `xn--` label are refused rather
    than silently mapped to another name."""
    text = host.lower()
    trailing = text.endswith(".")
    labels = (text[:-1] if trailing else text).split(".")
    out: list[str] = []
    for label in labels:
        if not label:
            raise ValueError("an empty label")
        if not label.isascii():
            try:
                label = idna.encode(label).decode("ascii")
            except (idna.IDNAError, UnicodeError) as exc:
                raise ValueError(f"not a valid internationalised name ({exc})") from None
        if not _LABEL.fullmatch(label):
            raise ValueError(f"label {label!r} is not a valid DNS label")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"label {label!r} is not a valid IDNA A-label") from None
        out.append(label)
    name = ".".join(out)
    if len(name) > 253:
        raise ValueError("longer than 253 characters")
    return name + "." if trailing else name


def validate_url(url: object) -> WebhookUrl:
    """Check a webhook URL's shape and return it parsed; raise 422 (``field="url"``).

    http or https only, a host, no credentials, a valid port, at most 2048 characters.
    The sender parses with this same function (`services/sender/wire.py`), so a URL
    accepted here is one it can send to. Whether the host's addresses are allowed is a
    separate check (``check_addresses``).
    """
    if not isinstance(url, str) or not url:
        raise _url_error("url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise _url_error(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        raise _url_error("url must not contain whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _url_error(f"url is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _url_error("url must use http or https")
    if "@" in parts.netloc:
        raise _url_error("credentials in URL are not allowed")
    host = parts.hostname
    if not host:
        raise _url_error("url has no host")
    try:
        port = parts.port
    except ValueError:
        raise _url_error("url has an invalid port") from None
    if port == 0:
        raise _url_error("url has an invalid port")
    if parse_host_ip(host) is None:
        if any(ch in host for ch in "%/?#:[]"):
            raise _url_error(f"url has an invalid host {host!r}")
        try:
            host = normalise_host(host)
        except ValueError as exc:
            raise _url_error(f"url has an invalid host {host!r}: {exc}") from None
    default = 443 if scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookUrl(
        scheme=scheme,
        host=host,
        port=port or default,
        explicit_port=port is not None and port != default,
        path=quote(path, safe=_PATH_SAFE),
    )
