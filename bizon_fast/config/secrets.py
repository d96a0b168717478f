"""Resolve ``env://`` and ``gsm://`` references in a raw config, before validation (bizon's resolvers).

Two forms share the grammar ``<scheme>://<path>`` (scheme: ``[a-z0-9_]+``):

- a whole value, ``token: env://DUMMY_TOKEN``; a whole value with any other scheme (``https://``,
  ``postgresql://``) is an ordinary string and stays untouched;
- inline tokens, ``dsn: "postgresql://u:${gsm://db-pw}@host/db"``; inside ``${...}`` an unknown
  scheme or a malformed token is an error, since the author clearly meant a reference.

Resolution happens on the raw dict so connectors never see a reference. Each distinct reference is
fetched once per resolution (one Secret Manager call per secret, however often it is used).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from bizon_fast.config.yamlpaths import format_path
from bizon_fast.errors import ConfigError

#: a whole value that is a reference, e.g. ``gsm://my-secret/versions/3``
WHOLE_RE = re.compile(r"^([a-z0-9_]+)://(.+)$", re.DOTALL)
#: one well-formed inline token, e.g. ``${env://PG_PASSWORD}``
INLINE_RE = re.compile(r"^\$\{\s*([a-z0-9_]+)://([^}]+?)\s*\}$")
#: every ``${...}`` in a string, so malformed ones can be reported rather than left in place
ANY_TOKEN_RE = re.compile(r"\$\{[^}]*\}")

KNOWN_SCHEMES = ("env", "gsm")
#: bizon's legacy whole-value substitution: a string starting with it is that environment variable's value
LEGACY_ENV_PREFIX = "BIZON_ENV_"

PathParts = tuple[str | int, ...]


class SecretResolutionError(ConfigError):
    """A reference could not be resolved. ``path`` is where it sits in the config (may be empty)."""

    def __init__(self, message: str, *, path: PathParts = (), reference: str | None = None) -> None:
        self.path = path
        self.reference = reference
        self.reason = message
        where = format_path(path)
        super().__init__(f"{where}: {message}" if where else message)


def _project_from(secrets_cfg: Any) -> str | None:
    """``secrets.gsm.project_id`` from the raw ``secrets:`` dict or a SecretsConfig model."""
    if secrets_cfg is None:
        return None
    gsm = secrets_cfg.get("gsm") if isinstance(secrets_cfg, dict) else getattr(secrets_cfg, "gsm", None)
    if gsm is None:
        return None
    project = gsm.get("project_id") if isinstance(gsm, dict) else getattr(gsm, "project_id", None)
    return project if isinstance(project, str) and project else None


class Resolver:
    """Resolves references and caches each value, so a secret used twice is fetched once."""

    def __init__(self, secrets_cfg: Any = None) -> None:
        self.project_id = _project_from(secrets_cfg)
        self._cache: dict[str, str] = {}
        self._gsm_client: Any = None
        self._handlers: dict[str, Callable[[str], str]] = {"env": self._env, "gsm": self._gsm}

    # -------------------------------------------------------- public

    def resolve(self, scheme: str, path: str) -> str:
        reference = f"{scheme}://{path}"
        if reference not in self._cache:
            handler = self._handlers.get(scheme)
            if handler is None:
                raise SecretResolutionError(
                    f"unknown reference scheme '{scheme}' in '{reference}'; known: {', '.join(KNOWN_SCHEMES)}",
                    reference=reference,
                )
            self._cache[reference] = handler(path)
        return self._cache[reference]

    def resolve_string(self, value: str) -> str:
        """``value`` with its whole-value or inline references replaced (unchanged when it has none)."""
        if "${" not in value:
            match = WHOLE_RE.match(value.strip())
            if match and match.group(1) in KNOWN_SCHEMES:
                return self.resolve(match.group(1), match.group(2))
            return value
        return ANY_TOKEN_RE.sub(lambda m: self.resolve_token(m.group(0)), value)

    # -------------------------------------------------------- schemes

    def resolve_token(self, token: str) -> str:
        match = INLINE_RE.match(token)
        if not match:
            raise SecretResolutionError(
                f"malformed reference '{token}'; expected '${{<scheme>://<path>}}', e.g. '${{env://PG_PASSWORD}}'",
                reference=token,
            )
        scheme, path = match.group(1), match.group(2).strip()
        if scheme not in KNOWN_SCHEMES:
            raise SecretResolutionError(
                f"unknown reference scheme '{scheme}' in '{token}'; known: {', '.join(KNOWN_SCHEMES)}",
                reference=token,
            )
        return self.resolve(scheme, path)

    def _env(self, name: str) -> str:
        name = name.strip()
        value = os.environ.get(name)
        if value is None:
            raise SecretResolutionError(
                f"environment variable {name} is not set (referenced as env://{name}); "
                "export it or put it in the --env-file",
                reference=f"env://{name}",
            )
        return value

    def _gsm_name(self, path: str) -> str:
        """The full secret-version name: ``projects/<p>/secrets/<id>/versions/<v>`` (latest by default)."""
        path = path.strip().strip("/")
        if path.startswith("projects/"):
            return path if "/versions/" in path else f"{path}/versions/latest"
        project = self.project_id or self._adc_project()
        secret, _, version = path.partition("/versions/")
        return f"projects/{project}/secrets/{secret}/versions/{version or 'latest'}"

    def _adc_project(self) -> str:
        try:
            import google.auth

            _, project = google.auth.default()
        except Exception as exc:  # noqa: BLE001 - any ADC failure means: say where to put the project
            raise SecretResolutionError(
                f"gsm:// needs a GCP project: set secrets.gsm.project_id (application default credentials: {exc})"
            ) from None
        if not project:
            raise SecretResolutionError("gsm:// needs a GCP project: set secrets.gsm.project_id")
        return project

    def _gsm(self, path: str) -> str:
        try:
            from google.cloud import secretmanager
        except ImportError:
            raise SecretResolutionError(
                "gsm:// references need Google Secret Manager: pip install google-cloud-secret-manager",
                reference=f"gsm://{path}",
            ) from None
        name = self._gsm_name(path)
        try:
            if self._gsm_client is None:
                self._gsm_client = secretmanager.SecretManagerServiceClient()
            response = self._gsm_client.access_secret_version(request={"name": name})
            return response.payload.data.decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - NotFound, PermissionDenied, auth errors: all are the user's to fix
            raise SecretResolutionError(
                f"cannot read secret {name}: {type(exc).__name__}: {exc}", reference=f"gsm://{path}"
            ) from None


def _walk(value: Any, path: PathParts, resolver: Resolver) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), resolver) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), resolver) for i, v in enumerate(value)]
    if isinstance(value, str):
        try:
            return resolver.resolve_string(value)
        except SecretResolutionError as exc:
            raise SecretResolutionError(exc.reason, path=path, reference=exc.reference) from None
    return value


def resolve_references(raw: dict[str, Any], secrets_cfg: Any = None) -> dict[str, Any]:
    """A copy of ``raw`` with every ``env://``/``gsm://`` reference resolved, in dicts and lists alike.

    ``secrets_cfg`` is the ``secrets:`` block (raw dict or model) giving the default GSM project;
    when None it is read from ``raw`` itself, after resolving its own env references (so
    ``project_id: ${env://GCP_PROJECT}`` works). Raises :class:`SecretResolutionError` (a
    ConfigError) naming the config path of the first reference that cannot be resolved.
    """
    if secrets_cfg is None and isinstance(raw.get("secrets"), dict):
        secrets_cfg = _walk(raw["secrets"], ("secrets",), Resolver())
    return _walk(raw, (), Resolver(secrets_cfg))


def _references_in(value: str) -> list[str]:
    if "${" in value:
        refs = []
        for token in ANY_TOKEN_RE.findall(value):
            match = INLINE_RE.match(token)
            refs.append(f"{match.group(1)}://{match.group(2).strip()}" if match else token)
        return refs
    match = WHOLE_RE.match(value.strip())
    return [value.strip()] if match and match.group(1) in KNOWN_SCHEMES else []


def find_references(raw: Any) -> list[tuple[str, str]]:
    """``(config path, reference)`` for every reference in ``raw``, without resolving (``secrets check``).

    Inline tokens are given as ``scheme://path``; a malformed ``${...}`` token is listed as written
    so that resolving it with :func:`resolve_reference` reports what is wrong with it.
    """
    found: list[tuple[str, str]] = []

    def walk(value: Any, path: PathParts) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, (*path, key))
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                walk(sub, (*path, index))
        elif isinstance(value, str):
            found.extend((format_path(path), ref) for ref in _references_in(value))

    walk(raw, ())
    return found


def resolve_reference(reference: str, secrets_cfg: Any = None, resolver: Resolver | None = None) -> str:
    """Resolve one reference as listed by :func:`find_references` (``scheme://path`` or ``${...}``).

    Pass one ``resolver`` for several references to share its cache and Secret Manager client.
    """
    resolver = resolver or Resolver(secrets_cfg)
    reference = reference.strip()
    if reference.startswith("${"):
        return resolver.resolve_token(reference)
    match = WHOLE_RE.match(reference)
    if not match:
        raise SecretResolutionError(
            f"'{reference}' is not a reference; expected '<scheme>://<path>', e.g. 'env://PG_PASSWORD'",
            reference=reference,
        )
    return resolver.resolve(match.group(1), match.group(2))
