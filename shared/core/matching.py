"""Webhook event filters (DESIGN.md section 5): validation and matching against a type.

A filter is ``*``, an exact type (``pull_request.opened``), a family with ``.*``
(``pull_request.*``) or a bare family (``pull_request``: all of its actions).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from .errors import ValidationError
from .events import CATALOG, EVENT_TYPES, is_known_type, split_type

__all__ = ["MAX_FILTERS", "expand_filter", "matches", "validate_filters"]

# Far more than the catalog has types; it only stops an absurd request body.
MAX_FILTERS = 100


def _is_valid_filter(item: str) -> bool:
    if item == "*" or is_known_type(item):
        return True
    family = item[:-2] if item.endswith(".*") else item
    return family in CATALOG


def validate_filters(filters: object) -> tuple[str, ...]:
    """Validate a webhook's ``events`` value and return it de-duplicated, order kept.

    Raises ``ValidationError(field="events")`` naming the first bad filter.
    """
    if not isinstance(filters, list) or not filters:
        raise ValidationError("events must be a non-empty list of event filters", field="events")
    if len(filters) > MAX_FILTERS:
        raise ValidationError(f"events accepts at most {MAX_FILTERS} filters", field="events")
    seen: dict[str, None] = {}
    for item in filters:
        if not isinstance(item, str):
            raise ValidationError(f"event filter {item!r} is not a string", field="events")
        if not _is_valid_filter(item):
            raise ValidationError(
                f"unknown event filter {item!r}; use '*', a type such as "
                "'pull_request.opened', a family such as 'pull_request' or 'pull_request.*'",
                field="events",
            )
        seen.setdefault(item, None)
    return tuple(seen)


def _filter_matches(item: str, full_type: str) -> bool:
    if item == "*" or item == full_type:
        return True
    family, _ = split_type(full_type)
    return item == family or item == f"{family}.*"


def matches(filters: Sequence[str], full_type: str) -> bool:
    """Return True if any of ``filters`` selects the event type ``full_type``.

    ``*`` matches every type. Pings are not routed through filters (a ping goes to its
    own webhook alone), so whether a filter matches ``ping`` does not matter in practice.
    """
    return any(_filter_matches(item, full_type) for item in filters)


@lru_cache(maxsize=256)
def expand_filter(item: str) -> tuple[str, ...]:
    """Return every catalog type a single (valid) filter selects, in catalog order."""
    return tuple(full for full in EVENT_TYPES if _filter_matches(item, full))
