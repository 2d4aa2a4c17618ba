"""The wrk driver's script and result parsing, without running wrk."""

from __future__ import annotations

import re

import orjson
import pytest

from tests.bench import wrk
from tests.bench.inbound import _template as inbound_template
from tests.bench.ingest import _template as ingest_template


def _lua_strings(text: str) -> list[str]:
    """The contents of the Lua long strings in `text`, in order."""
    return [m.group(2) for m in re.finditer(r"\[(=*)\[(.*?)\]\1\]", text, re.S)]


def test_body_parts_join_back_into_the_template_around_the_number() -> None:
    template = '{"a": {seq}, "b": "x]]y", "c": "call {seq}"}'
    lua = wrk.script(template, {"X-Webhook-Secret": "whsec_]=]abc"})
    parts_line = next(line for line in lua.splitlines() if line.startswith("local parts"))
    parts = _lua_strings(parts_line)
    assert "7".join(parts) == template.replace(wrk.SEQ, "7")
    headers_line = next(line for line in lua.splitlines() if line.startswith("local headers"))
    assert _lua_strings(headers_line) == ["X-Webhook-Secret", "whsec_]=]abc"]


@pytest.mark.parametrize("template", [inbound_template("edge"), ingest_template("ingest")])
def test_the_phases_templates_are_json_once_numbered(template: str) -> None:
    assert wrk.SEQ in template
    body = orjson.loads(template.replace(wrk.SEQ, "123"))
    assert "123" in orjson.dumps(body).decode()


def test_result_line_is_parsed_and_refusals_counted() -> None:
    out = (
        "Running 10s test @ http://127.0.0.1:1/x\n"
        'WRK_RESULT {"seconds": 10.02, "statuses": {"202": 20000, "429": 3}, '
        '"p50_ms": 14.46, "p99_ms": 35.04, '
        '"errors": {"connect": 0, "read": 2, "write": 0, "timeout": 0}}\n'
    )
    result = wrk.parse(out)
    assert result.count(202) == 20000
    assert result.p50_ms == 14.5 and result.p99_ms == 35.0
    assert result.refused(202) == {"429": 3, "read": 2}
    figures = result.figures(202, "events_per_s")
    assert figures["events_per_s"] == round(20000 / 10.02, 1)
    assert figures["accepted"] == 20000 and figures["refused"] == {"429": 3, "read": 2}


def test_no_result_line_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no result"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")
