"""Secrets at rest: sealing, opening, and the sender's and edge's remembered openings."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from shared.crypto import OpenedSecrets, SecretBox


class CountingBox(SecretBox):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.opened = 0

    def open(self, sealed: bytes | bytearray | memoryview) -> str:
        self.opened += 1
        return super().open(sealed)


def test_a_sealed_secret_is_opened_once_then_remembered() -> None:
    box = CountingBox(Fernet.generate_key().decode())
    secrets = OpenedSecrets(box)
    sealed = box.seal("whsec_one")
    assert [secrets.open(sealed) for _ in range(3)] == ["whsec_one"] * 3
    assert secrets.open(bytearray(sealed)) == "whsec_one"  # asyncpg may hand a memoryview
    assert box.opened == 1
    rotated = box.seal("whsec_two")  # a rotation is a new sealed value
    assert secrets.open(rotated) == "whsec_two"
    assert box.opened == 2


def test_the_cache_empties_when_full_and_still_answers() -> None:
    box = CountingBox(Fernet.generate_key().decode())
    secrets = OpenedSecrets(box, size=2)
    sealed = [box.seal(f"s{n}") for n in range(3)]
    assert [secrets.open(s) for s in sealed] == ["s0", "s1", "s2"]
    assert secrets.open(sealed[0]) == "s0"  # emptied at the third: opened again
    assert box.opened == 4
    assert "s0" not in repr(secrets) and "hidden" in repr(secrets)


def test_a_secret_sealed_with_another_key_is_a_value_error_each_time() -> None:
    other = SecretBox(Fernet.generate_key().decode()).seal("x")
    secrets = OpenedSecrets(SecretBox(Fernet.generate_key().decode()))
    for _ in range(2):
        with pytest.raises(ValueError, match="HOOKLINE_SECRET_KEY"):
            secrets.open(other)
