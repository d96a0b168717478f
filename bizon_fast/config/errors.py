"""Raising config errors from inside validators, located at the YAML path the user wrote.

Pydantic merges a ValidationError raised in a validator into the outer one, prefixing the outer
location; :func:`fail` builds such an error from plain (location, message, input) triples, so
every block's checks read the same and the loader can format them all one way.
"""

from __future__ import annotations

import typing
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

Loc = tuple[str | int, ...]


_PYDANTIC_ERROR_TYPES = frozenset(typing.get_args(ErrorType))


def fail(title: str, errors: list[tuple[Loc, str, Any]], carried: ValidationError | None = None) -> NoReturn:
    """Raise ``errors`` (location, message, offending input) from inside a validator.

    Pydantic merges a ValidationError raised in a validator into the outer one and prefixes the
    outer location, so the user is told ``streams[1].destination.table_id`` rather than ``<root>``.
    ``carried`` errors are raised along with them, keeping their own types (and so their wording).
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("config", msg), loc=loc, input=value) for loc, msg, value in errors
    ]
    for err in carried.errors() if carried is not None else []:
        kind = err["type"]
        if kind in _PYDANTIC_ERROR_TYPES and kind not in ("value_error", "assertion_error"):
            details.append(InitErrorDetails(type=kind, loc=err["loc"], input=err.get("input"), ctx=err.get("ctx", {})))
        else:
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError("config", _plain_msg(err)), loc=err["loc"], input=err.get("input")
                )
            )
    raise ValidationError.from_exception_data(title, details)


def require_dsn_or(model: Any, keys: tuple[str, ...]) -> None:
    """A Postgres connection block (backend or destination) needs a ``dsn`` or every key of ``keys``."""
    if model.dsn:
        return
    missing = [k for k in keys if not getattr(model, k)]
    if missing:
        fail(
            type(model).__name__,
            [((k,), "missing required key (or give a dsn: postgresql://user:pass@host/db)", None) for k in missing],
        )


def _plain_msg(err: Any) -> str:
    """Pydantic's message, with the "Value error, " prefix that ValueError-based validators get removed."""
    msg = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
