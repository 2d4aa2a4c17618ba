"""Request bodies Hookline could not store or re-encode are refused with a 4xx."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import BadRequest, ValidationError
from shared.core.jsonbody import MAX_DEPTH, _depth, parse_json


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 600, 1023, 2000])
def test_deep_nesting_is_a_422_naming_the_body(depth: int) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_json(b"[" * depth + b"]" * depth)
    assert caught.value.field == "body"


def test_nesting_up_to_the_limit_is_kept_and_encodes_again() -> None:
    raw = b'{"a":' * (MAX_DEPTH - 1) + b"[]" + b"}" * (MAX_DEPTH - 1)
    assert orjson.dumps(parse_json(raw)) == raw


@pytest.mark.parametrize("number", ["18446744073709551616", "-9223372036854775809", "9" * 5000])
def test_integers_beyond_64_bits_are_refused_not_rounded(number: str) -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        parse_json(b'{"n": ' + number.encode() + b"}")


@pytest.mark.parametrize(
    "raw",
    [
        b"18446744073709551616",
        b" -9223372036854775809",
        b"[1,18446744073709551616]",
        b'{"a":[0,\n\t-9223372036854775809]}',
        b'{"s":"x","n":\r\n123456789012345678901234}',
    ],
)
def test_a_big_integer_is_found_wherever_json_allows_a_number(raw: bytes) -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        parse_json(raw)


def test_long_digit_runs_inside_strings_skip_the_exact_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow(*args: object, **kwargs: object) -> object:
        raise AssertionError("the exact parse ran")

    monkeypatch.setattr("shared.core.jsonbody.json.loads", slow)
    raw = b'{"before":"' + b"0" * 40 + b'","after":"9' + b"1" * 39 + b'","n":12}'
    assert parse_json(raw)["before"] == "0" * 40


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_64_bit_integers_stay_exact(n: int) -> None:
    assert parse_json(orjson.dumps({"n": n, "s": str(n) * 3})) == {"n": n, "s": str(n) * 3}


def test_long_digit_strings_are_fine_and_garbage_is_400() -> None:
    assert parse_json(b'{"sha":"12345678901234567890123456789"}')["sha"].startswith("1234")
    with pytest.raises(BadRequest):
        parse_json(b"{nope")


@given(
    st.recursive(
        st.none() | st.integers(-10, 10) | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
        ),
        max_leaves=30,
    )
)
def test_depth_counts_the_deepest_container_like_a_recursive_walk(value: object) -> None:
    def walk(node: object) -> int:
        if isinstance(node, dict):
            return 1 + max((walk(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((walk(v) for v in node), default=0)
        return 0

    assert _depth(value) == walk(value)
    assert _depth(value, limit=1) == min(walk(value), 2)  # stops one level past the limit


@given(
    st.integers(min_value=2**64, max_value=10**40) | st.integers(max_value=-(2**63) - 1),
    st.sampled_from(["", " ", "\n", "\t ", "\r\n"]),
    st.integers(min_value=0, max_value=3),
)
def test_any_integer_beyond_64_bits_is_refused_wherever_it_sits(
    n: int, space: str, depth: int
) -> None:
    raw = "[" * depth + space + str(n) + space + "]" * depth
    with pytest.raises(ValidationError, match="64 bits"):
        parse_json(('{"s":"' + "0" * 40 + '","v":' + raw + "}").encode())
