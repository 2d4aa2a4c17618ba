"""Unit tests for the error tree: statuses, codes, retryability and the JSON shape."""

from __future__ import annotations

import pytest

from shared.core.errors import (
    BadRequest,
    Conflict,
    HooklineError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationError,
)


@pytest.mark.parametrize(
    ("cls", "status", "code", "retryable"),
    [
        (BadRequest, 400, "bad_request", False),
        (Unauthorized, 401, "unauthorized", False),
        (NotFound, 404, "not_found", False),
        (Conflict, 409, "conflict", False),
        (PayloadTooLarge, 413, "payload_too_large", False),
        (ValidationError, 422, "validation_error", False),
        (RateLimited, 429, "rate_limited", True),
        (Unavailable, 503, "unavailable", True),
    ],
)
def test_each_error_has_its_status_code_and_retryability(
    cls: type[HooklineError], status: int, code: str, retryable: bool
) -> None:
    err = cls("boom")
    assert isinstance(err, HooklineError)
    assert err.http_status == status
    assert err.code == code
    assert err.retryable is retryable
    assert str(err) == "boom"


def test_to_dict_omits_field_when_unset() -> None:
    assert NotFound("no such webhook").to_dict() == {
        "error": {"code": "not_found", "message": "no such webhook"}
    }


def test_to_dict_names_the_field() -> None:
    err = ValidationError("bad url", field="url")
    assert err.field == "url"
    assert err.to_dict() == {
        "error": {"code": "validation_error", "message": "bad url", "field": "url"}
    }


def test_rate_limited_carries_retry_after() -> None:
    err = RateLimited("slow down", retry_after=30)
    assert err.retry_after == 30
    assert "retry_after" not in err.to_dict()["error"]


def test_errors_can_be_caught_as_the_root() -> None:
    with pytest.raises(HooklineError) as info:
        raise Conflict("too many webhooks")
    assert info.value.http_status == 409
