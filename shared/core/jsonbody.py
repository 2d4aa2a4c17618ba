"""Parsing a JSON request body into what the rest of Hookline can store and re-encode.

orjson reads nesting up to 1,024 levels but writes only 254, and it turns integers beyond
64 bits into floats silently; both would surface later (a 500, a changed number), so both
are refused here with a 4xx naming the body.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .errors import BadRequest, ValidationError

MAX_DEPTH = 128
# Every integer of up to 19 digits fits in 64 bits (unsigned), but a negative one of 19.
# A JSON number starts the document or follows `[`, `:`, `,` or whitespace; digits inside a
# string mostly do not (a push creating a branch has `"before": "000...0"`, 40 zeros, which
# sent every such body through the slow exact parse: a fifth of the API's CPU on batches).
# A string that does look like one only costs that parse, never a wrong answer.
_LONG_DIGITS = re.compile(rb"(?:^|[\[:,\s])(?:-\d{19}|\d{20})")
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
    if _LONG_DIGITS.search(raw):
        try:
            json.loads(raw, parse_int=_check_int)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise ValidationError(_TOO_BIG, field="body") from None
    return value
