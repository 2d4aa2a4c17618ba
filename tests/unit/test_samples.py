"""Every catalog entry has a description, an example and a schema, and the example is a
valid instance of its schema."""

from __future__ import annotations

import jsonschema
import pytest

from shared.core.events import EVENT_TYPES, catalog_document
from shared.core.samples import example, schema


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_example_follows_its_schema(event_type: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(event_type))
    jsonschema.validate(example(event_type), schema(event_type))


def test_a_schema_refuses_what_it_should() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ref": 7}, schema("push"))


def test_the_catalog_carries_them_and_the_new_types() -> None:
    entries = {e["type"]: e for e in catalog_document()["event_types"]}
    for new in ("commit.comment", "webhook.failing", "webhook.disabled", "webhook.enabled"):
        assert new in entries
    for entry in entries.values():
        assert entry["description"] and entry["example"] and entry["schema"]["type"] == "object"
    assert entries["pull_request.merged"]["example"]["pull_request"]["state"] == "merged"
    assert entries["pull_request.opened"]["description"] == "A pull request was opened."


def test_examples_are_copies() -> None:
    example("push")["ref"] = "changed"
    assert example("push")["ref"] == "refs/heads/main"
