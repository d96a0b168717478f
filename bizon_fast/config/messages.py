"""Config errors as users read them: one line per problem, ``file:line: yaml.path: message``.

Pydantic's errors name model fields and union members; these name the YAML as written: the path
with union tags dropped, the line of the key (or of its block when the key is missing), the keys a
block accepts (following the models that depend on a sibling, through their ``child_model`` hooks),
and a value that came from a reference by its reference, never its secret.
"""

from __future__ import annotations

import collections.abc
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from bizon_fast.config.catalog import ConnectorCatalog
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.config.secrets import LEGACY_ENV_PREFIX, find_references
from bizon_fast.config.yamlpaths import format_path, lookup
from bizon_fast.config.yamlstrict import Positions

MAX_REPORTED_ERRORS = 12


def format_validation_error(
    exc: ValidationError,
    *,
    origin: str,
    connectors: ConnectorCatalog | None = None,
    positions: Positions | None = None,
    data: Any = None,
    original: Any = None,
) -> str:
    """One line per problem, sorted by line: ``file:line: yaml.path: message``."""
    positions = positions or {}
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = _walk(tuple(err["loc"]), data, connectors)[0]
        if err["type"] == "invalid_key":  # pydantic puts an index there; the key itself says more
            loc = (*loc[:-1], str(err.get("input")))
        message = _describe(err, loc, data, original, connectors)
        line = line_of(loc, positions, missing=err["type"] == "missing")
        text = located(origin, positions, loc, message, line=line)
        if text not in seen:
            seen.add(text)
            entries.append((line or 0, text))
    entries.sort(key=lambda e: e[0])
    lines = [text for _, text in entries[:MAX_REPORTED_ERRORS]]
    if len(entries) > MAX_REPORTED_ERRORS:
        lines.append(f"{origin}: ... and {len(entries) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)


def located(origin: str, positions: Positions, loc: tuple[Any, ...], message: str, *, line: int | None = None) -> str:
    line = line if line is not None else line_of(loc, positions)
    where = f"{origin}:{line}" if line else origin
    path = format_path(loc)
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def line_of(loc: tuple[Any, ...], positions: Positions, *, missing: bool = False) -> int | None:
    """The line of ``loc`` in the file, else of its nearest ancestor (a missing key: its parent's line)."""
    parts = tuple(p if isinstance(p, int) else str(p) for p in loc)
    if missing:
        parts = parts[:-1]
    while parts:
        pos = positions.get(parts)
        if pos is not None:
            return pos.key_line
        parts = parts[:-1]
    return None


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping (key: value entries)",
    "model_type": "a mapping (key: value entries)",
    "model_attributes_type": "a mapping (key: value entries)",
    "list_type": "a list",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _describe(err: Any, loc: tuple[Any, ...], data: Any, original: Any, connectors: ConnectorCatalog | None) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(loc, data, connectors)
    if kind == "missing":
        return "required key is missing"
    if kind == "invalid_key":
        return f"YAML read this key as {err.get('input')!r}, not a string (on/off/yes/no are booleans); quote it"
    given = described(err.get("input"), loc, original)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {given}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"expected a value {_BOUNDS[kind]} {bound}, got {given}"
    if kind in ("literal_error", "enum"):
        return f"expected one of {ctx.get('expected', '?')}, got {given}"
    msg = err["msg"]
    if kind in ("value_error", "assertion_error", "config"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should be "):
        return f"expected {msg.removeprefix('Input should be ')}, got {given}"
    return f"{msg} (got {given})"


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def described(value: Any, loc: tuple[Any, ...], original: Any) -> str:
    """Describe the offending value; one that came from a reference is named by it, never printed."""
    if original is not None:
        found, before = lookup(original, loc)
        from_reference = isinstance(before, str) and (before.startswith(LEGACY_ENV_PREFIX) or find_references(before))
        if found and from_reference and before != value:
            return f"the value of {before!r}"
    return kind_of(value)


def _unknown_key(loc: tuple[Any, ...], data: Any, connectors: ConnectorCatalog | None) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1], data, connectors)
    if model is None:
        return f"unknown key '{key}'"
    allowed = _keys_of(model)
    message = f"unknown key '{key}'; expected one of: {', '.join(allowed)}"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        message += f" (did you mean '{close[0]}'?)"
    found, block = lookup(data, loc[:-1])
    homes = [
        field
        for field in model.model_fields
        if _is_model(sub := _child_model(model, field, block if found else None, connectors)) and key in _keys_of(sub)
    ]
    if len(homes) == 1:  # e.g. syncCursorInDBEvery written beside engine.backend.config instead of inside it
        message += f"; '{key}' belongs under {format_path((*loc[:-1], homes[0]))}"
    return message


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias if isinstance(info.alias, str) else name for name, info in model.model_fields.items()]


def _child_model(
    model: type[BaseModel], field: str, block: Any, connectors: ConnectorCatalog | None
) -> type[BaseModel] | None:
    hook = getattr(model, "child_model", None)
    chosen = hook(field, block, connectors) if hook is not None else None
    if chosen is not None:
        return chosen
    kind, inner = _shape(model.model_fields[field].annotation)
    return inner if kind == "model" else None


def _shape(annotation: Any) -> tuple[str, Any]:
    """What an annotation holds: ("model", cls), ("list"|"dict", item), ("union", member models), ("other", None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _shape(typing.get_args(annotation)[0])
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _shape(args[0])
        members: list[type[BaseModel]] = []
        for arg in args:
            kind, inner = _shape(arg)
            members += [inner] if kind == "model" else inner if kind == "union" else []
        return "union", members
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and args:
        return "list", args[0]
    if origin in (dict, collections.abc.Mapping) and len(args) == 2:
        return "dict", args[1]
    if _is_model(annotation):
        return "model", annotation
    return "other", None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _field_named(model: type[BaseModel], key: Any) -> str | None:
    for name, info in model.model_fields.items():
        if key == name or key == info.alias:
            return name
    return None


def _walk(loc: tuple[Any, ...], data: Any, connectors: ConnectorCatalog | None) -> tuple[tuple[Any, ...], Any]:
    """(``loc`` as the user wrote it, the annotation found there), following the models that validated it.

    Pydantic inserts union members into locations (``authentication.api_key.params`` for a
    discriminated union, ``params.TokenAuthParams.token`` for a plain one); those are not YAML
    keys, so they are dropped. Sibling-dependent blocks follow each model's ``child_model`` hook.
    """
    current: Any = PipelineConfig
    block: Any = data
    clean: list[Any] = []
    for part in loc:
        kind, inner = _shape(current)
        if kind == "union":
            member = next((m for m in inner if _field_named(m, part)), None)
            if member is None and isinstance(part, str):
                continue  # a union tag, not a key
            kind, inner = ("model", member) if member is not None else ("other", None)
        clean.append(part)
        if kind == "model":
            name = _field_named(inner, part)
            hook = getattr(inner, "child_model", None)
            chosen = hook(name, block, connectors) if hook is not None and name is not None else None
            current = chosen or (inner.model_fields[name].annotation if name is not None else None)
            block = block.get(part) if isinstance(block, dict) else None
        elif kind in ("list", "dict"):
            current = inner
            found, block = lookup(block, [part])
            block = block if found else None
        else:
            current, block = None, None
    return tuple(clean), current


def _model_at(loc: tuple[Any, ...], data: Any, connectors: ConnectorCatalog | None) -> type[BaseModel] | None:
    """The model that validated the block at ``loc`` (None when it is not a single model)."""
    kind, inner = _shape(_walk(loc, data, connectors)[1])
    return inner if kind == "model" else None
