"""The ``source:`` block: bizon's common keys, and validation with the connector's own model.

``source:`` is validated with the model the connector declares for its stream (found through the
:class:`~bizon_fast.config.catalog.ConnectorCatalog` handed to validation), so connector keys such
as ``source.rows`` are checked and reported at their YAML path. Keys every bizon source shares
(``sync_mode``, ``authentication``...) are typed here and checked whatever the connector's model.
"""

from __future__ import annotations

from copy import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from bizon_fast.config.auth import AuthConfig
from bizon_fast.config.blocks import Strict, as_mapping
from bizon_fast.config.catalog import ConnectorCatalog
from bizon_fast.config.errors import Loc, fail


class SourceConfig(BaseModel):
    """bizon's ``source:`` block. Connectors subclass it; extra keys are kept for the connector's class."""

    model_config = ConfigDict(extra="allow")

    name: str
    stream: str
    source_file_path: str | None = None
    sync_mode: str = "full_refresh"  # full_refresh | incremental | stream
    cursor_field: str | None = None
    force_ignore_checkpoint: bool = False
    reset: bool = False
    max_iterations: int | None = None


class ApiConfig(Strict):
    """bizon's ``source.api_config``; its ``retry_limit`` is accepted (bizon never read it either)."""

    retry_limit: int = Field(10, ge=0)


SyncMode = Literal["full_refresh", "incremental", "stream"]


class BizonSourceConfig(SourceConfig):
    """bizon's common ``source:`` keys, typed. Connector config classes may subclass it.

    When a connector's class derives from the plain ``SourceConfig`` instead, these keys are still
    checked: :func:`source_config_classes` adds them to the connector's class for validation.
    """

    sync_mode: SyncMode = "full_refresh"
    max_iterations: int | None = Field(None, ge=0)
    authentication: AuthConfig | None = None
    api_config: ApiConfig = Field(default_factory=ApiConfig)
    init_pipeline: bool = True

    @field_validator("api_config", mode="before")
    @classmethod
    def _empty_api_config(cls, value: Any) -> Any:
        return as_mapping(value)


class SourceLookupError(Exception):
    """The ``source:`` block names a source or stream that does not exist; ``key`` is the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _with_common_keys(cls: type[SourceConfig]) -> type[SourceConfig]:
    """``cls`` plus bizon's typed common keys it does not declare itself (for validation only).

    Pydantic takes an inherited field's definition from the first base, so multiple inheritance
    would keep ``SourceConfig``'s untyped ``sync_mode``; a subclass that redeclares the fields does not.
    """
    if issubclass(cls, BizonSourceConfig) or not issubclass(cls, SourceConfig):
        return cls
    cached = _COMMON_KEYS_CACHE.get(cls)
    if cached is not None:
        return cached
    base_fields = SourceConfig.model_fields
    fields: dict[str, Any] = {}
    for key, info in BizonSourceConfig.model_fields.items():
        own = cls.model_fields.get(key)
        inherited = (
            own is not None
            and key in base_fields
            and own.annotation == base_fields[key].annotation
            and own.default == base_fields[key].default
        )
        if own is None or inherited:
            fields[key] = (info.annotation, copy(info))
    combined = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
    _COMMON_KEYS_CACHE[cls] = combined
    return combined


_COMMON_KEYS_CACHE: dict[type, type[SourceConfig]] = {}


def source_config_classes(
    connectors: ConnectorCatalog, name: str, stream: str, source_file_path: str | None = None
) -> tuple[type[SourceConfig], type[SourceConfig]]:
    """(model to validate ``source:`` with, model of the returned config) for a source and stream.

    Raises :class:`SourceLookupError` for an unknown source, stream or custom-source file.
    """
    cls = connectors.source_config_class(name, stream, source_file_path)
    return _with_common_keys(cls), cls


def validate_source(value: Any, connectors: ConnectorCatalog) -> Any:
    """Validate a raw ``source:`` block with its connector's config class (see :func:`source_config_classes`)."""
    if isinstance(value, SourceConfig) or not isinstance(value, dict):
        return value
    name, stream, path = value.get("name"), value.get("stream"), value.get("source_file_path")
    if not (isinstance(name, str) and isinstance(stream, str) and (path is None or isinstance(path, str))):
        return BizonSourceConfig.model_validate(value)  # reports the missing or mistyped keys
    try:
        check_model, result_model = source_config_classes(connectors, name, stream, path)
    except SourceLookupError as exc:
        lookup_error: list[tuple[Loc, str, Any]] = [((exc.key,), exc.message, value.get(exc.key))]
        try:
            BizonSourceConfig.model_validate(value)
        except ValidationError as common:
            fail("source", lookup_error, carried=common)
        fail("source", lookup_error)
    checked = check_model.model_validate(value)
    if result_model is check_model:
        return checked
    return result_model.model_validate(value)
