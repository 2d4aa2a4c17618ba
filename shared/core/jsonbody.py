"""Parsing a JSON request body into what the rest of Hookline can store and re-encode.

orjson reads nesting up to 1,024 levels but writes only 254, and it turns integers beyond
64 bits into floats silently; both would surface later (a 500, a changed number), so both
are refused here with a 4xx naming the body.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import BadRequest, ValidationError

MAX_DEPTH = 128
# Every integer of up to 19 digits fits in 64 bits (unsigned), but a negative one of 19.
# Runs of digits are found in C (every digit made a 9, then `bytes.find`): a regular
# expression walking a 340 KB batch took 7-16 ms, the translation 0.4.
_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)
_RUN_19 = b"9" * 19
# A JSON number starts the document or follows one of these (`[`, `:`, `,`, whitespace).
_BEFORE_NUMBER = frozenset(b"[:, \t\r\n")


def _may_hold_a_big_integer(raw: bytes) -> bool:
    """Whether `raw` has a run of 20 digits (19 after a minus) where JSON allows a number.
    Digits inside a string mostly do not qualify: a push creating a branch has `"before":
    "000...0"` (40 zeros), which sent every such body through the slow exact parse, a fifth
    of the API's CPU on batches. A string that does qualify only costs that parse."""
    digits = raw.translate(_DIGITS_AS_NINES)
    at = digits.find(_RUN_19)
    while at != -1:
        ahead = digits[at : at + 20]
        start = at - 1 if at and raw[at - 1] == 0x2D else at  # a minus before the run
        if (ahead == _RUN_19 + b"9" or start < at) and (
            start == 0 or raw[start - 1] in _BEFORE_NUMBER
        ):
            return True
        at = digits.find(_RUN_19, at + 19)
    return False


_INT64 = (-(2**63), 2**64 - 1)
_TOO_BIG = "a number in the body does not fit in 64 bits; send it as a string"


def _check_int(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValidationError(_TOO_BIG, field="body")
    return value


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep `value` (as orjson parsed it: plain dicts and lists) nests, counted level
    by level and only as far as `limit + 1`. Only containers are queued, by exact type: a
    walk that pushed every value cost a batch of 500 events 20 ms, this one 3."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        deeper = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                kind = type(child)
                if kind is dict or kind is list:
                    deeper.append(child)
        level = deeper
    return depth


def parse_json(raw: bytes) -> Any:
    """The parsed body: 400 if it is not JSON, 422 (field `body`) if it nests deeper than
    MAX_DEPTH levels or holds an integer beyond 64 bits."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).lower()
        if "recursion" in reason or "depth" in reason:
            raise ValidationError(
                f"the body nests deeper than {MAX_DEPTH} levels", field="body"
            ) from None
        if "infinity" in reason:
            raise ValidationError(_TOO_BIG, field="body") from None
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    # Cheap guards first: a body with fewer brackets than the limit cannot be too deep,
    # and one without a run of 20 digits (19 after a minus) holds no integer beyond 64 bits.
    if raw.count(b"[") + raw.count(b"{") >= MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise ValidationError(f"the body nests deeper than {MAX_DEPTH} levels", field="body")
    if _may_hold_a_big_integer(raw):
        try:
            json.loads(raw, parse_int=_check_int)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise ValidationError(_TOO_BIG, field="body") from None
    return value
