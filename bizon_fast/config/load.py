"""Load a pipeline YAML into a PipelineConfig, with errors that name the file, line and YAML path.

The loading order is bizon's: ``yaml.safe_load``, legacy ``BIZON_ENV_*`` whole-value substitution,
``env://``/``gsm://`` reference resolution, then validation. Unlike bizon, command-line options
override the YAML only when they are given, and every user mistake is a single
:class:`~bizon_fast.errors.ConfigError` whose text the CLI prints as is (one line per problem,
``file:line: path: what was given, what was expected``).
"""

from __future__ import annotations

import copy
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bizon_fast.config.catalog import CONTEXT_KEY, ConnectorCatalog
from bizon_fast.config.engine import LogLevel
from bizon_fast.config.messages import (
    MAX_REPORTED_ERRORS,
    described,
    format_validation_error,
    kind_of,
    line_of,
    located,
)
from bizon_fast.config.paths import pipeline_folder, resolve_paths, resolve_source_file
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.config.secrets import LEGACY_ENV_PREFIX, SecretResolutionError, resolve_references
from bizon_fast.config.transforms import compile_polars, compile_python, sql_syntax_error
from bizon_fast.config.yamlpaths import lookup
from bizon_fast.config.yamlstrict import Positions, read_yaml
from bizon_fast.errors import ConfigError

RUNNER_TYPES = ("thread", "process", "stream")
#: the range of every integer in a config: the engine, sqlite, Arrow and the services all hold int64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
    from dotenv import load_dotenv  # here: most runs have no env file, and python-dotenv compiles its regexes

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


def read_pipeline_file(path: str | Path) -> tuple[dict[str, Any], Positions]:
    """The YAML as written (references and ``BIZON_ENV_*`` untouched) and the line of every key.

    ``config validate --skip-references`` validates this, so that CI without access to secrets can
    check a config; everything else goes through :func:`load_config`.
    """
    return _parse_yaml(_read_text(Path(path)), str(path))


def load_config(
    path: str | Path,
    *,
    connectors: ConnectorCatalog,
    workers: int | None = None,
    runner: str | None = None,
    custom_source: str | Path | None = None,
    env_file: str | Path | None = None,
    log_level: str | None = None,
    reset: bool = False,
    role: str | None = None,
    metrics_port: int | None = None,
) -> PipelineConfig:
    """Read, resolve and validate the pipeline at ``path`` against the ``connectors`` this install has.

    ``reset`` (``--reset``) sets ``source.reset`` before validation, so its rules apply to it too.

    ``workers`` sets ``engine.runner.config.max_workers``, ``runner`` ``engine.runner.type``,
    ``log_level`` ``engine.runner.log_level``, ``role`` ``engine.runner.config.role``,
    ``metrics_port`` ``engine.monitoring.prometheus.port`` and ``custom_source`` ``source.source_file_path`` --
    each only when given, so the YAML's own values otherwise stand (bizon's ``--runner`` default
    silently replaced the YAML's). Raises ConfigError for every user mistake.

    Relative paths in the file are relative to the file's folder (:mod:`bizon_fast.config.paths`);
    ``custom_source``, given on the command line, is relative to the working directory.
    """
    overrides = _check_overrides(workers, runner, log_level, role, metrics_port)
    load_env_file(env_file)
    origin = str(path)
    text = _read_text(Path(path))
    original, positions = _parse_yaml(text, origin)
    raw = _substitute_legacy_env(copy.deepcopy(original), origin, positions)
    try:
        raw = resolve_references(raw)
    except SecretResolutionError as exc:
        raise ConfigError(located(origin, positions, exc.path, exc.reason)) from None
    if custom_source is not None:
        overrides.append((("source", "source_file_path"), os.path.abspath(custom_source)))
    if reset:
        overrides.append((("source", "reset"), True))
    for parts, value in overrides:
        _set_in(raw, parts, value)
    return parse_config(
        raw, origin, connectors=connectors, positions=positions, original=original, base_dir=pipeline_folder(path)
    )


def parse_config(
    raw: dict[str, Any],
    origin: str = "<config>",
    *,
    connectors: ConnectorCatalog,
    positions: Positions | None = None,
    original: dict[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> PipelineConfig:
    """Validate an already resolved config dict; ``positions`` and ``original`` improve the messages.

    ``original`` is the dict before substitution: a value that came from a reference is described
    by its reference, never printed, so a secret cannot leak into an error message.

    Beyond the models, every integer must fit in int64 and every transform must compile (see
    :func:`_integer_problems` and :func:`_transform_problems`), so neither fails the run later.

    ``base_dir`` is the folder relative paths are resolved against (the YAML file's); None leaves
    them as written, relative to the working directory.
    """
    positions = positions or {}
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else None
    if base is not None:
        raw = resolve_source_file(raw, base)
    try:
        cfg = PipelineConfig.model_validate(raw, context={CONTEXT_KEY: connectors})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(
                exc, origin=origin, connectors=connectors, positions=positions, data=raw, original=original
            )
        ) from None
    problems = [
        *_integer_problems(cfg, origin, positions, original),
        *_transform_problems(cfg, origin, positions, original),
    ]
    if problems:
        problems.sort(key=lambda entry: entry[0])
        raise ConfigError("\n".join(text for _, text in problems[:MAX_REPORTED_ERRORS]))
    if base is not None:
        resolve_paths(cfg, base)
    return cfg


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
        raise ConfigError(
            f"{origin}:1: expected a mapping of keys (name, source, destination, ...), got {kind_of(raw)}"
        )
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
                located(
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
    workers: int | None,
    runner: str | None,
    log_level: str | None,
    role: str | None = None,
    metrics_port: int | None = None,
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
    if metrics_port is not None:
        if isinstance(metrics_port, bool) or not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535:
            raise ConfigError(f"--metrics-port: expected an integer from 0 to 65535, got {metrics_port!r}")
        overrides.append((("engine", "monitoring", "prometheus", "port"), metrics_port))
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
            given = described(value, loc, original)
            message = f"expected an integer between {INT64_MIN} and {INT64_MAX}, got {given}"
            line = line_of(loc, positions)
            yield line or 0, located(origin, positions, loc, message, line=line)


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
            line = line_of(loc, positions)
            pos = positions.get(loc)
            found, written = lookup(original, loc) if original is not None else (False, None)
            if pos is not None and code_line and found and written == code:  # the code is in the file itself
                line = pos.text_line + code_line - 1
            yield line or 0, located(origin, positions, loc, message, line=line)


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
