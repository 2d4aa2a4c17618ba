"""One parse of a webhook URL: what creation accepts is what the sender can send to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.wire import Target, encode
from shared.core.errors import ValidationError
from shared.core.ssrf import validate_url


@pytest.mark.parametrize(
    "url",
    [
        "http://exa\u200bmple.com/",  # zero-width space: IDNA 2003 would drop it silently
        "http://\uff45xample.com/",  # a full-width letter
        "http://xn--zz.example/",  # not a valid A-label
        "http://a..b/",
        "http://-a.example/",
        "http://" + "a" * 64 + ".example/",
    ],
)
def test_hosts_no_resolver_agrees_on_are_refused_at_creation(url: str) -> None:
    with pytest.raises(ValidationError, match="invalid host") as info:
        validate_url(url)
    assert info.value.field == "url"


def test_hosts_are_normalised_once_for_both_sides() -> None:
    for url, host, head in [
        ("http://B\u00fccher.DE/x?y=\u00e4", "xn--bcher-kva.de", "POST /x?y=%C3%A4 HTTP/1.1"),
        ("https://Example.COM:443", "example.com", "POST / HTTP/1.1"),
        ("http://example.com:8080/a%20b", "example.com", "POST /a%20b HTTP/1.1"),
        ("http://[::1]:9000/", "::1", "POST / HTTP/1.1"),
    ]:
        assert validate_url(url).host == host
        target = Target.of(url)
        assert target.host == host and target.head.startswith(head + "\r\n")
    assert Target.of("http://example.com:8080/").head.endswith("Host: example.com:8080\r\n")
    assert Target.of("http://[::1]:9000/").head.endswith("Host: [::1]:9000\r\n")
    assert Target.of("https://example.com:443/").head.endswith("Host: example.com\r\n")


hosts = st.text(
    alphabet=st.sampled_from("abcXYZ019-._\u00fc\u00df\u200b\uff41\u0130%:[]@"), max_size=20
)
urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["http", "HTTPS", "ftp"]),
        hosts,
        st.sampled_from(["", ":80", ":8080", ":0", ":x"]),
        st.text(max_size=10),
    ),
)


@given(urls)
def test_any_url_creation_accepts_is_one_the_sender_can_send_to(url: str) -> None:
    try:
        accepted = validate_url(url)
    except ValidationError:
        return
    target = Target.of(url)  # never raises for what creation accepted
    assert (target.host, target.port) == (accepted.host, accepted.port)
    assert target.host.isascii()
    assert encode(target, {}, b"{}").isascii()
