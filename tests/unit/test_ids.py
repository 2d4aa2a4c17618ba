"""Random identifiers: `random_uuid` is a version 4 UUID in its canonical text."""

from __future__ import annotations

import uuid

from shared.core.ids import random_uuid


def test_random_uuids_are_canonical_version_4_and_distinct() -> None:
    made = [random_uuid() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, dashes at 8-4-4-4-12
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
