"""Unit tests for the error tree: statuses, codes, retryability and the JSON shape."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from shared.core.errors import (
    BadRequest,
    Conflict,
    HooklineError,
    NotFound,
    PayloadTooLarge,
    ProduceFailed,
    RateLimited,
    RowRejected,
    Unauthorized,
    Unavailable,
    Unstorable,
    ValidationError,
    is_retryable,
)
from shared.db import db_errors, translate


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


def test_every_exception_class_derives_from_the_root() -> None:
    import shared.core.errors as errors

    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type):
            assert issubclass(value, HooklineError), name
            assert value.code, name


def test_an_instance_may_carry_another_retryability() -> None:
    assert ProduceFailed("broker said no").retryable is True
    assert ProduceFailed("message too large", retryable=False).retryable is False
    assert is_retryable(Unavailable("down")) and not is_retryable(RowRejected("refused"))
    assert not is_retryable(OSError("untranslated: not ours to judge"))


@pytest.mark.parametrize(
    ("driver", "translated"),
    [
        (asyncpg.CannotConnectNowError("the database system is starting up"), Unavailable),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), Unavailable),
        (asyncpg.InterfaceError("pool is closing"), Unavailable),
        (ConnectionRefusedError(111, "refused"), Unavailable),
        (asyncpg.DataError("invalid byte sequence"), Unstorable),
        (asyncpg_base.DataError("invalid input for query argument $1"), Unstorable),
    ],
)
def test_the_database_adapter_translates_driver_errors(
    driver: Exception, translated: type[HooklineError]
) -> None:
    with pytest.raises(translated) as info, db_errors():
        raise driver
    assert info.value.__cause__ is driver
    assert info.value.retryable is (translated is Unavailable)


def test_errors_the_adapter_does_not_know_pass_unchanged() -> None:
    with pytest.raises(KeyError), db_errors():
        raise KeyError("a bug")
    assert translate(KeyError("a bug")) is None
