"""Load a pipeline YAML into a PipelineConfig, with errors that name the file, line and YAML path.

The loading order is bizon's: ``yaml.safe_load``, legacy ``BIZON_ENV_*`` whole-value substitution,
``env://``/``gsm://`` reference resolution, then validation. Unlike bizon, command-line options
override the YAML only when they are given, and every user mistake is a single
:class:`~bizon_fast.errors.ConfigError` whose text the CLI prints as is (one line per problem,
``file:line: path: what was given, what was expected``).
"""

from __future__ import annotations

import collections.abc
import copy
import difflib
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from pydantic import BaseModel, ValidationError

from bizon_fast.config.models import LogLevel, PipelineConfig
from bizon_fast.config.secrets import SecretResolutionError, find_references, resolve_references
from bizon_fast.config.yamlpaths import Position, format_path, lookup
from bizon_fast.config.yamlstrict import read_yaml
from bizon_fast.errors import ConfigError
from bizon_fast.transform.code import compile_polars, compile_python, sql_syntax_error

LEGACY_ENV_PREFIX = "BIZON_ENV_"
RUNNER_TYPES = ("thread", "process", "stream")
MAX_REPORTED_ERRORS = 12
#: the range of every integer in a config: the engine, sqlite, Arrow and the services all hold int64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Positions = dict[tuple[str | int, ...], Position]


# ---------------------------------------------------------------- public API


def load_env_file(env_file: str | Path | None = None) -> Path | None:
    """Load environment variables from ``env_file``, or from ``./.env`` when there is one.

    Variables already set in the environment win over the file (python-dotenv's and bizon's
    default), so a CI secret is never shadowed by a developer's ``.env``. Returns the file loaded.
    """
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise ConfigError(f"--env-file {env_file}: no such file")
    else:
        path = Path(".env")
        if not path.is_file():
            return None
    load_dotenv(path, override=False)
    return path


def read_raw_config(path: str | Path, *, env_file: str | Path | None = None) -> dict[str, Any]:
    """The YAML as a dict after the env file and legacy ``BIZON_ENV_*`` substitution, references unresolved.

    This is what ``secrets check`` inspects: :func:`~bizon_fast.config.secrets.find_references` on it.
    """
    load_env_file(env_file)
    text = _read_text(Path(path))
    raw, positions = _parse_yaml(text, str(path))
    return _substitute_legacy_env(raw, str(path), positions)


def load_config(
    path: str | Path,
    *,
    workers: int | None = None,
    runner: str | None = None,
    custom_source: str | Path | None = None,
    env_file: str | Path | None = None,
    log_level: str | None = None,
    reset: bool = False,
    role: str | None = None,
) -> PipelineConfig:
    """Read, resolve and validate the pipeline at ``path``.

    ``reset`` (``--reset``) sets ``source.reset`` before validation, so its rules apply to it too.

    ``workers`` sets ``engine.runner.config.max_workers``, ``runner`` ``engine.runner.type``,
    ``log_level`` ``engine.runner.log_level``, ``role`` ``engine.runner.config.role`` and
    ``custom_source`` ``source.source_file_path`` --
    each only when given, so the YAML's own values otherwise stand (bizon's ``--runner`` default
    silently replaced the YAML's). Raises ConfigError for every user mistake.
    """
    overrides = _check_overrides(workers, runner, log_level, role)
    load_env_file(env_file)
    origin = str(path)
    text = _read_text(Path(path))
    original, positions = _parse_yaml(text, origin)
    raw = _substitute_legacy_env(copy.deepcopy(original), origin, positions)
    try:
        raw = resolve_references(raw)
    except SecretResolutionError as exc:
        raise ConfigError(_located(origin, positions, exc.path, exc.reason)) from None
    if custom_source is not None:
        overrides.append((("source", "source_file_path"), str(custom_source)))
    if reset:
        overrides.append((("source", "reset"), True))
    for parts, value in overrides:
        _set_in(raw, parts, value)
    return parse_config(raw, origin, positions=positions, original=original)


def parse_config(
    raw: dict[str, Any],
    origin: str = "<config>",
    *,
    positions: Positions | None = None,
    original: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Validate an already resolved config dict; ``positions`` and ``original`` improve the messages.

    ``original`` is the dict before substitution: a value that came from a reference is described
    by its reference, never printed, so a secret cannot leak into an error message.

    Beyond the models, every integer must fit in int64 and every transform must compile (see
    :func:`_integer_problems` and :func:`_transform_problems`), so neither fails the run later.
    """
    positions = positions or {}
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, origin=origin, positions=positions, data=raw, original=original)
        ) from None
    problems = [
        *_integer_problems(cfg, origin, positions, original),
        *_transform_problems(cfg, origin, positions, original),
    ]
    if problems:
        problems.sort(key=lambda entry: entry[0])
        raise ConfigError("\n".join(text for _, text in problems[:MAX_REPORTED_ERRORS]))
    return cfg


def format_validation_error(
    exc: ValidationError,
    *,
    origin: str,
    positions: Positions | None = None,
    data: Any = None,
    original: Any = None,
) -> str:
    """One line per problem, sorted by line: ``file:line: yaml.path: message``."""
    positions = positions or {}
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = _walk(tuple(err["loc"]), data)[0]
        if err["type"] == "invalid_key":  # pydantic puts an index there; the key itself says more
            loc = (*loc[:-1], str(err.get("input")))
        message = _describe(err, loc, data, original)
        line = _line_of(loc, positions, missing=err["type"] == "missing")
        text = _located(origin, positions, loc, message, line=line)
        if text not in seen:
            seen.add(text)
            entries.append((line or 0, text))
    entries.sort(key=lambda e: e[0])
    lines = [text for _, text in entries[:MAX_REPORTED_ERRORS]]
    if len(entries) > MAX_REPORTED_ERRORS:
        lines.append(f"{origin}: ... and {len(entries) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)


# ---------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a pipeline YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse_yaml(text: str, origin: str) -> tuple[dict[str, Any], Positions]:
    """The top-level mapping and its positions, read by the strict reader (bounded aliases, no duplicate keys)."""
    raw, positions = read_yaml(text, origin)
    if raw is None:
        raise ConfigError(f"{origin}: the file is empty; expected a pipeline (name, source, destination, ...)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}:1: expected a mapping of keys (name, source, destination, ...), got {_kind(raw)}")
    return raw, positions


def _substitute_legacy_env(raw: Any, origin: str, positions: Positions, path: tuple[str | int, ...] = ()) -> Any:
    """bizon's legacy substitution: a string value starting with ``BIZON_ENV_`` is that variable's value.

    Unlike bizon, lists are walked too and an unset variable is an error instead of a silent None.
    """
    if isinstance(raw, dict):
        return {k: _substitute_legacy_env(v, origin, positions, (*path, k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_substitute_legacy_env(v, origin, positions, (*path, i)) for i, v in enumerate(raw)]
    if isinstance(raw, str) and raw.startswith(LEGACY_ENV_PREFIX):
        value = os.environ.get(raw)
        if value is None:
            raise ConfigError(
                _located(
                    origin,
                    positions,
                    path,
                    f"environment variable {raw} is not set; export it or put it in the --env-file",
                )
            )
        return value
    return raw


# ---------------------------------------------------------------- command-line overrides


ROLES = ("all", "producer", "consumer")


def _check_overrides(
    workers: int | None, runner: str | None, log_level: str | None, role: str | None = None
) -> list[tuple[tuple[str, ...], Any]]:
    """Validate the command-line values up front: their errors must name the option, not a YAML line."""
    overrides: list[tuple[tuple[str, ...], Any]] = []
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers: expected an integer >= 1, got {workers!r}")
        overrides.append((("engine", "runner", "config", "max_workers"), workers))
    if runner is not None:
        if runner not in RUNNER_TYPES:
            raise ConfigError(f"--runner: expected one of {', '.join(RUNNER_TYPES)}, got {runner!r}")
        overrides.append((("engine", "runner", "type"), runner))
    if log_level is not None:
        levels = typing.get_args(LogLevel)
        if not isinstance(log_level, str) or log_level.upper() not in levels:
            raise ConfigError(f"--log-level: expected one of {', '.join(levels)}, got {log_level!r}")
        overrides.append((("engine", "runner", "log_level"), log_level.upper()))
    if role is not None:
        if role not in ROLES:
            raise ConfigError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
        overrides.append((("engine", "runner", "config", "role"), role))
    return overrides


def _set_in(raw: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """Set ``raw[parts]``, creating missing blocks; a malformed block is left for validation to report."""
    node: Any = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            return
    node[parts[-1]] = value


# ---------------------------------------------------------------- checks beyond the models


def _integer_problems(
    cfg: PipelineConfig, origin: str, positions: Positions, original: Any
) -> Iterator[tuple[int, str]]:
    """An integer beyond int64 anywhere in the validated config (whether written or from a reference).

    Checked on the validated models rather than on the YAML so that a number reaching an integer
    key through ``env://`` or a command-line option is caught too; no key needs more than int64,
    and beyond it sqlite, Arrow and the services fail with an OverflowError traceback mid-run.
    """
    for loc, value in _integers(cfg, ()):
        if not INT64_MIN <= value <= INT64_MAX:
            given = _given(value, loc, original)
            message = f"expected an integer between {INT64_MIN} and {INT64_MAX}, got {given}"
            line = _line_of(loc, positions)
            yield line or 0, _located(origin, positions, loc, message, line=line)


def _integers(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], int]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield loc, value
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            key = info.alias if isinstance(info.alias, str) else name
            yield from _integers(getattr(value, name, None), (*loc, key))
        for key, item in (value.model_extra or {}).items():
            yield from _integers(item, (*loc, key))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _integers(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _integers(item, (*loc, index))


def _transform_problems(
    cfg: PipelineConfig, origin: str, positions: Positions, original: Any
) -> Iterator[tuple[int, str]]:
    """Compile every transform as the run will (same functions), so a syntax error is a config error.

    The line given is the file's: the line where the YAML value's text starts plus the line inside
    the code (exact for a ``|`` block or a one-line value).
    """
    for index, transform in enumerate(cfg.transforms):
        for kind in ("python", "polars", "sql"):
            code = getattr(transform, kind)
            problem = _code_problem(kind, transform.label, code) if code is not None else None
            if problem is None:
                continue
            message, code_line = problem
            loc = ("transforms", index, kind)
            line = _line_of(loc, positions)
            pos = positions.get(loc)
            found, written = lookup(original, loc) if original is not None else (False, None)
            if pos is not None and code_line and found and written == code:  # the code is in the file itself
                line = pos.text_line + code_line - 1
            yield line or 0, _located(origin, positions, loc, message, line=line)


def _code_problem(kind: str, label: str, code: str) -> tuple[str, int | None] | None:
    """(message, line in the code) when a transform's code cannot compile; None when it can."""
    try:
        if kind == "python":
            compile_python(label, code)
        elif kind == "polars":
            compile_polars(label, code)
        elif (error := sql_syntax_error(code)) is not None:
            return f"SQL syntax error: {error[0]}", error[1]
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno} of the code: {exc.msg}", exc.lineno
    except ValueError as exc:  # a NUL character
        return f"cannot compile the code: {exc}", None
    return None


# ---------------------------------------------------------------- messages


def _located(origin: str, positions: Positions, loc: tuple[Any, ...], message: str, *, line: int | None = None) -> str:
    line = line if line is not None else _line_of(loc, positions)
    where = f"{origin}:{line}" if line else origin
    path = format_path(loc)
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def _line_of(loc: tuple[Any, ...], positions: Positions, *, missing: bool = False) -> int | None:
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


def _describe(err: Any, loc: tuple[Any, ...], data: Any, original: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(loc, data)
    if kind == "missing":
        return "required key is missing"
    if kind == "invalid_key":
        return f"YAML read this key as {err.get('input')!r}, not a string (on/off/yes/no are booleans); quote it"
    given = _given(err.get("input"), loc, original)
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


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _given(value: Any, loc: tuple[Any, ...], original: Any) -> str:
    """Describe the offending value; one that came from a reference is named by it, never printed."""
    if original is not None:
        found, before = lookup(original, loc)
        from_reference = isinstance(before, str) and (before.startswith(LEGACY_ENV_PREFIX) or find_references(before))
        if found and from_reference and before != value:
            return f"the value of {before!r}"
    return _kind(value)


def _unknown_key(loc: tuple[Any, ...], data: Any) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1], data)
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
        if _is_model(sub := _child_model(model, field, block if found else None)) and key in _keys_of(sub)
    ]
    if len(homes) == 1:  # e.g. syncCursorInDBEvery written beside engine.backend.config instead of inside it
        message += f"; '{key}' belongs under {format_path((*loc[:-1], homes[0]))}"
    return message


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias if isinstance(info.alias, str) else name for name, info in model.model_fields.items()]


def _child_model(model: type[BaseModel], field: str, block: Any) -> type[BaseModel] | None:
    hook = getattr(model, "child_model", None)
    chosen = hook(field, block) if hook is not None else None
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


def _walk(loc: tuple[Any, ...], data: Any) -> tuple[tuple[Any, ...], Any]:
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
            chosen = hook(name, block) if hook is not None and name is not None else None
            current = chosen or (inner.model_fields[name].annotation if name is not None else None)
            block = block.get(part) if isinstance(block, dict) else None
        elif kind in ("list", "dict"):
            current = inner
            found, block = lookup(block, [part])
            block = block if found else None
        else:
            current, block = None, None
    return tuple(clean), current


def _model_at(loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The model that validated the block at ``loc`` (None when it is not a single model)."""
    kind, inner = _shape(_walk(loc, data)[1])
    return inner if kind == "model" else None
