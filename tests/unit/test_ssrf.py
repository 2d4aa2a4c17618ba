"""Unit tests for SSRF rules: IP literal spellings, address classes, allowlist, URL shape."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import ValidationError
from shared.core.ssrf import Allowlist, check_addresses, classify, parse_host_ip, validate_url

ip = ipaddress.ip_address
NO_ALLOW = Allowlist()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.1.258", "10.1.1.2"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("fe80::1%25eth0", "fe80::1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_parse_host_ip_spellings(host: str, expected: str) -> None:
    got = parse_host_ip(host)
    assert got is not None
    assert got == ip(expected)


@pytest.mark.parametrize(
    "host",
    ["example.com", "localhost", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "08.0.0.1", "0x1g",
     "1..2", "-1", "+1", "1_0.0.0.1", "4294967296", "1.16777216", "[not-ip]", "", "a:b"],
)  # fmt: skip
def test_parse_host_ip_returns_none_for_non_literals(host: str) -> None:
    assert parse_host_ip(host) is None


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link_local"),
        ("fc00::1", "unique_local"),
        ("fd12:3456::1", "unique_local"),
        ("fec0::1", "site_local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard"),
        ("::ffff:127.0.0.1", "ipv4_mapped loopback"),
        ("::ffff:169.254.169.254", "ipv4_mapped link_local"),
        ("::ffff:10.0.0.1", "ipv4_mapped private"),
        ("::127.0.0.1", "ipv4_compatible loopback"),
        ("64:ff9b::10.0.0.1", "nat64 private"),
        ("64:ff9b::127.0.0.1", "nat64 loopback"),
        ("2002:7f00:1::", "6to4 loopback"),
        ("2002:a9fe:a9fe::1", "6to4 link_local"),
        # Teredo client 192.0.2.45, obfuscated (RFC 4380's example).
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo documentation"),
    ],
)
def test_classify_blocks(addr: str, reason: str) -> None:
    assert classify(ip(addr)) == reason


@pytest.mark.parametrize(
    "addr",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "100.128.0.1", "172.32.0.1"],
)  # fmt: skip
def test_classify_allows_public(addr: str) -> None:
    assert classify(ip(addr)) is None


@pytest.mark.parametrize(
    "host",
    ["127.1", "0x7f000001", "[::ffff:127.0.0.1]", "0177.0.0.1", "2130706433",
     "169.254.169.254", "100.64.0.1", "[fe80::1%eth0]", "[::1]", "0", "0x0"],
)  # fmt: skip
def test_odd_spellings_of_blocked_hosts_are_blocked(host: str) -> None:
    addr = parse_host_ip(host)
    assert addr is not None
    reason = check_addresses([addr], NO_ALLOW)
    assert reason is not None
    assert reason.startswith(str(addr))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_v4_spelling_agrees_and_mapped_classifies_like_v4(number: int) -> None:
    v4 = ipaddress.IPv4Address(number)
    assert parse_host_ip(str(number)) == v4
    assert parse_host_ip(hex(number)) == v4
    assert parse_host_ip(str(v4)) == v4
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    inner = classify(v4)
    outer = classify(mapped)
    assert (inner is None) is (outer is None)
    if inner is not None:
        assert outer == f"ipv4_mapped {inner}"
    if v4.is_private or v4.is_loopback or v4.is_link_local or v4.is_multicast:
        assert inner is not None


def test_check_addresses_first_reason_and_public() -> None:
    public = [ip("8.8.8.8"), ip("2606:4700:4700::1111")]
    assert check_addresses(public, NO_ALLOW) is None
    assert check_addresses([*public, ip("127.0.0.1")], NO_ALLOW) == "127.0.0.1 is loopback"
    assert check_addresses([ip("10.0.0.1"), ip("::1")], NO_ALLOW) == "10.0.0.1 is private"
    assert check_addresses([], NO_ALLOW) is not None


def test_allowlist_exempts_listed_networks() -> None:
    allow = Allowlist.parse("127.0.0.0/8, ::1/128,, ")
    assert len(allow.networks) == 2
    assert allow
    assert not Allowlist.parse("")
    assert allow.allows(ip("127.0.0.1"))
    assert allow.allows(ip("127.5.5.5"))
    assert allow.allows(ip("::1"))
    assert allow.allows(ip("::ffff:127.0.0.1"))
    assert not allow.allows(ip("10.0.0.1"))
    assert not allow.allows(ip("::2"))
    assert check_addresses([ip("127.0.0.1"), ip("::1")], allow) is None
    assert check_addresses([ip("::ffff:127.0.0.1")], allow) is None
    assert check_addresses([ip("127.0.0.1"), ip("169.254.169.254")], allow) == (
        "169.254.169.254 is link_local"
    )


def test_allowlist_parse_names_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        Allowlist.parse("127.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValueError, match="localhost"):
        Allowlist.parse("localhost")


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook", "http://example.com:8080/a?b=c", "HTTPS://Example.COM",
     "http://127.0.0.1:9000/", "http://[::1]:8080/x", "http://[fe80::1%25eth0]/"],
)  # fmt: skip
def test_validate_url_accepts(url: str) -> None:
    parts = validate_url(url)
    assert parts.scheme in ("http", "https")
    assert parts.host


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("example.com/hook", "http or https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://a.com@127.0.0.1/", "credentials"),
        ("http:///path", "no host"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:0/", "port"),
        ("http://example.com:abc/", "port"),
        ("http://[::1/", "malformed"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("https://example.com/" + "a" * 2048, "2048"),
        ("", "non-empty"),
    ],
)
def test_validate_url_rejects(url: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as info:
        validate_url(url)
    assert info.value.field == "url"


def test_validate_url_rejects_non_string() -> None:
    with pytest.raises(ValidationError):
        validate_url(None)
