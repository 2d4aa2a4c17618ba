"""Unit tests for event filters: validation and matching, with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import ValidationError
from shared.core.events import CATALOG, EVENT_TYPES, split_type
from shared.core.matching import expand_filter, matches, validate_filters

families = st.sampled_from(list(CATALOG))
types = st.sampled_from(EVENT_TYPES)


def test_validate_filters_accepts_every_form_and_dedupes() -> None:
    got = validate_filters(["push", "pull_request.*", "issue", "*", "push", "star.added"])
    assert got == ("push", "pull_request.*", "issue", "*", "star.added")


@pytest.mark.parametrize(
    "bad",
    [[], None, "push", {"push": 1}, ["push", "pull_request.nope"], ["pull"], ["pull_request.*.*"],
     ["**"], [""], [1], ["*.opened"], ["PUSH"]],
)  # fmt: skip
def test_validate_filters_rejects_with_field_events(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_filters(bad)
    assert info.value.field == "events"


def test_rejection_names_the_bad_filter() -> None:
    with pytest.raises(ValidationError, match=r"pull_request\.nope"):
        validate_filters(["push", "pull_request.nope"])


def test_matches_examples() -> None:
    assert matches(["pull_request.opened"], "pull_request.opened")
    assert not matches(["pull_request.opened"], "pull_request.closed")
    assert matches(["pull_request"], "pull_request.closed")
    assert matches(["pull_request.*"], "pull_request.merged")
    assert not matches(["pull_request.*"], "issue.opened")
    assert matches(["push"], "push")
    assert not matches(["push"], "pipeline.run_started")
    assert matches(["issue", "push"], "push")
    assert not matches([], "push")
    # A family name that is a prefix of another family's name is not a match.
    assert not matches(["pipe"], "pipeline.run_started")


@given(types)
def test_star_matches_everything(full: str) -> None:
    assert matches(["*"], full)


@given(families, types)
def test_family_filter_matches_exactly_its_family(family: str, full: str) -> None:
    in_family = split_type(full)[0] == family
    assert matches([family], full) is in_family
    assert matches([f"{family}.*"], full) is in_family


@given(types, types)
def test_exact_filter_matches_only_itself(filt: str, full: str) -> None:
    assert matches([filt], full) is (filt == full)


@given(st.lists(st.sampled_from(["*", *EVENT_TYPES, *CATALOG, *(f"{f}.*" for f in CATALOG)]),
                min_size=1))  # fmt: skip
def test_valid_filters_validate_and_match_as_their_union(filters: list[str]) -> None:
    validated = validate_filters(filters)
    assert set(validated) == set(filters)
    assert len(validated) == len(set(filters))
    union = {full for item in validated for full in expand_filter(item)}
    assert {full for full in EVENT_TYPES if matches(validated, full)} == union
