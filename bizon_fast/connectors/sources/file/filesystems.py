"""Where the files are: a ``source.path`` (local, ``file://``, ``s3://``, ``gs://``) opened as a pyarrow filesystem,
and its glob expanded into the files to read.

Why pyarrow's filesystems: the readers (Parquet, CSV, JSON) take their files straight from them, S3 and GCS
included, with ranged reads and no Python in the byte path; fsspec would add a layer and a dependency for
nothing pyarrow lacks here. Credentials follow each cloud's usual chain (AWS: environment, ``~/.aws``, instance
metadata; GCP: application default credentials) unless the config gives explicit ones.

Options are read from ``options`` by attribute with defaults (``endpoint_override``, ``region``,
``access_key_id``, ``secret_access_key``, ``session_token``, ``anonymous``, ``project``, ``credentials``), so
this module depends on no config class. Errors are one line naming ``source.path`` (or the option) and why.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from bizon_fast.errors import UserError

#: the YAML path errors name (the options are keys of the same block)
PATH_KEY = "source.path"
OPTIONS_KEY = "source"

GLOB_CHARS = frozenset("*?[")
#: how long GCS retries transient errors before a call fails (google-cloud-cpp's default is 15 minutes, which
#: keeps a run with a wrong endpoint silent that long; a read that still fails is retried by the engine's worker)
GCS_RETRY_LIMIT = datetime.timedelta(seconds=15)
#: an explicit GCS key is turned into an access token; a filesystem is rebuilt this long before the token expires
TOKEN_MARGIN = datetime.timedelta(minutes=10)
GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"

_CACHE: dict[tuple, tuple[pafs.FileSystem, datetime.datetime | None]] = {}
_CACHE_LOCK = threading.Lock()


def _opt(options: Any, name: str, default: Any = None) -> Any:
    value = getattr(options, name, default) if options is not None else default
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr
        value = value.get_secret_value()
    return default if value is None else value


def scheme_of(path: str) -> str:
    """``s3``, ``gs`` or ``file`` (a plain path is a local one)."""
    if "://" not in path:
        return "file"
    scheme = path.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        return "s3"
    if scheme in ("gs", "gcs"):
        return "gs"
    if scheme == "file":
        return "file"
    raise UserError(
        f"{PATH_KEY}: unsupported scheme {scheme}:// in {path!r} (use a local path, file://, s3:// or gs://)"
    )


def open_filesystem(path: str, options: Any = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``path`` and the path inside it (``bucket/key...`` for object stores, absolute
    for local files), glob characters kept. Filesystems are cached per process by their settings."""
    scheme = scheme_of(path)
    if scheme == "file":
        return pafs.LocalFileSystem(), local_path(path)
    rest = path.split("://", 1)[1]
    if not rest.split("/", 1)[0]:
        raise UserError(f"{PATH_KEY}: {path!r} names no bucket ({scheme}://bucket/prefix/*.parquet)")
    return _filesystem(scheme, rest.split("/", 1)[0], options), rest


def local_path(path: str) -> str:
    """An absolute local path from a plain path (relative to the working folder, ``~`` expanded) or a file:// URI."""
    if path.startswith("file://"):  # not urlsplit: a glob's ``?`` would be taken for a query
        rest = path[len("file://") :]
        rest = rest[len("localhost") :] if rest.startswith("localhost/") else rest
        if not rest.startswith("/"):
            raise UserError(f"{PATH_KEY}: file:// URIs name no host ({path!r}); use file:///absolute/path")
        path = rest
    return str(Path(path).expanduser().absolute())


def _filesystem(scheme: str, bucket: str, options: Any) -> pafs.FileSystem:
    key = (
        scheme,
        bucket if scheme == "s3" and not _opt(options, "region") and not _opt(options, "endpoint_override") else "",
        *(
            str(_opt(options, name))
            for name in (
                "endpoint_override",
                "region",
                "access_key_id",
                "secret_access_key",
                "session_token",
                "anonymous",
                "project",
                "credentials",
            )
        ),
    )
    now = datetime.datetime.now(datetime.UTC)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached and (cached[1] is None or cached[1] - TOKEN_MARGIN > now):
            return cached[0]
        fs, expires = (_s3(bucket, options), None) if scheme == "s3" else _gcs(options)
        _CACHE[key] = (fs, expires)
        return fs


def split_endpoint(endpoint: str) -> tuple[str | None, str]:
    """``http://host:port`` -> (``http``, ``host:port``); a bare ``host:port`` keeps pyarrow's default (https)."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(
                f"{OPTIONS_KEY}.endpoint_override: expected http(s)://host:port or host:port, got {endpoint!r}"
            )
        return parts.scheme, parts.netloc + parts.path.rstrip("/")
    return None, endpoint.rstrip("/")


def _s3(bucket: str, options: Any) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {}
    endpoint = _opt(options, "endpoint_override")
    if endpoint:
        kwargs["scheme"], kwargs["endpoint_override"] = split_endpoint(endpoint)
    key_id, secret = _opt(options, "access_key_id"), _opt(options, "secret_access_key")
    if bool(key_id) != bool(secret):
        missing = "secret_access_key" if key_id else "access_key_id"
        raise UserError(f"{OPTIONS_KEY}.{missing}: access_key_id and secret_access_key go together")
    if _opt(options, "session_token") and not key_id:
        raise UserError(f"{OPTIONS_KEY}.session_token: a session token goes with access_key_id and secret_access_key")
    anonymous = bool(_opt(options, "anonymous", False))
    if anonymous and key_id:
        raise UserError(f"{OPTIONS_KEY}.anonymous: anonymous access takes no access_key_id / secret_access_key")
    if key_id:
        kwargs.update(access_key=key_id, secret_key=secret)
        if token := _opt(options, "session_token"):
            kwargs["session_token"] = token
    kwargs["anonymous"] = anonymous
    region = _opt(options, "region")
    if not region and not endpoint:
        try:  # a bucket outside the default region answers 301 otherwise; pyarrow's from_uri does the same
            region = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError):
            region = None  # left to the AWS chain (AWS_REGION, ~/.aws/config, us-east-1)
    if region:
        kwargs["region"] = region
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{PATH_KEY}: cannot open s3 ({_where(kwargs)}): {one_line(exc)}") from None


def _gcs(options: Any) -> tuple[pafs.FileSystem, datetime.datetime | None]:
    kwargs: dict[str, Any] = {"retry_time_limit": GCS_RETRY_LIMIT}
    endpoint = _opt(options, "endpoint_override")
    if endpoint:
        scheme, kwargs["endpoint_override"] = split_endpoint(endpoint)
        kwargs["scheme"] = scheme or "https"
    if project := _opt(options, "project"):
        kwargs["project_id"] = project
    anonymous = bool(_opt(options, "anonymous", False))
    key = _opt(options, "credentials")
    if anonymous and key:
        raise UserError(f"{OPTIONS_KEY}.anonymous: anonymous access takes no credentials")
    expires = None
    if key:
        token, expires = gcs_token(key)
        kwargs.update(access_token=token, credential_token_expiration=expires)
    try:
        return pafs.GcsFileSystem(anonymous=anonymous, **kwargs), expires
    except (OSError, ValueError) as exc:
        raise UserError(f"{PATH_KEY}: cannot open gcs: {one_line(exc)}") from None


def gcs_token(key: str) -> tuple[str, datetime.datetime]:
    """An access token (and its expiry, UTC) from a service account key: a file path or the JSON text itself.

    Why a token: pyarrow's GCS filesystem takes no key, only the default chain or a token. The filesystem
    cache rebuilds the filesystem (with a fresh token) before this one expires.
    """
    try:
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account
    except ImportError:
        raise UserError(
            f"{OPTIONS_KEY}.credentials: a GCS key needs google-auth: pip install 'bizon-fast[files]'"
        ) from None
    text = key.strip()
    try:
        if text.startswith("{"):
            info = json.loads(text)
        else:
            file = Path(text).expanduser()
            if not file.is_file():
                raise UserError(f"{OPTIONS_KEY}.credentials: no such service account key file: {file}")
            info = json.loads(file.read_text())
        creds = service_account.Credentials.from_service_account_info(info, scopes=[GCS_SCOPE])
    except (ValueError, KeyError) as exc:
        raise UserError(f"{OPTIONS_KEY}.credentials: not a valid service account key: {one_line(exc)}") from None
    try:
        creds.refresh(Request())
    except Exception as exc:  # noqa: BLE001 - google-auth raises its own transport and refresh errors
        raise UserError(f"{OPTIONS_KEY}.credentials: cannot get an access token: {one_line(exc)}") from None
    expiry = creds.expiry or datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    if expiry.tzinfo is None:  # google-auth's expiry is naive UTC
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return creds.token, expiry


def has_glob(path: str) -> bool:
    return any(c in GLOB_CHARS for c in path)


def expand(fs: pafs.FileSystem, pattern: str, display: str | None = None) -> list[pafs.FileInfo]:
    """The files ``pattern`` names in ``fs``, sorted by path, each with its size and modification time.

    ``*``, ``?`` and ``[...]`` match within one path segment, ``**`` any number of segments; a pattern
    without them names one file, or a folder whose files (at any depth) are all taken. Files and folders
    whose names start with ``.`` or ``_`` (``_SUCCESS``, ``.staging``) are skipped unless the pattern
    names them. No match is an error: a backfill that reads nothing is a mistake, not a success.
    ``display`` is the path as the user wrote it, for messages.
    """
    display = display or (
        f"{'gs' if fs.type_name == 'gcs' else fs.type_name}://{pattern}" if fs.type_name in ("s3", "gcs") else pattern
    )
    pattern = pattern.rstrip("/") if len(pattern) > 1 else pattern
    segments = pattern.split("/")
    fixed = next((i for i, seg in enumerate(segments) if has_glob(seg)), None)
    try:
        if fixed is None:
            info = fs.get_file_info(pattern)
            if info.type == pafs.FileType.File:
                return [info]
            if info.type != pafs.FileType.Directory:
                raise UserError(f"{PATH_KEY}: no files match {display!r} (no such file or folder)")
            found = [f for f in _list(fs, pattern, recursive=True) if not _hidden(f.path, len(segments))]
        else:
            base = "/".join(segments[:fixed]) or ("/" if pattern.startswith("/") else "")
            rest = segments[fixed:]
            recursive = len(rest) > 1 or "**" in rest
            found = [f for f in _list(fs, base, recursive=recursive) if _match(f.path.split("/")[fixed:], rest)]
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(_unreachable(fs, display, exc)) from None
    found = sorted((f for f in found if f.type == pafs.FileType.File), key=lambda f: f.path)
    if not found:
        raise UserError(f"{PATH_KEY}: no files match {display!r}{_no_bucket(fs, segments[0])}")
    return found


def _no_bucket(fs: pafs.FileSystem, bucket: str) -> str:
    """`` (no bucket X)`` when an object store's listing came back empty because the bucket does not exist."""
    if fs.type_name not in ("s3", "gcs") or not bucket:
        return ""
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, ValueError):
        return ""
    return f" (no bucket {bucket!r} at {_endpoint(fs)})" if missing else ""


def _list(fs: pafs.FileSystem, base: str, recursive: bool) -> list[pafs.FileInfo]:
    if not base:
        raise UserError(f"{PATH_KEY}: a pattern must start with a folder or bucket, not a glob")
    return fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))


def _hidden(path: str, skip: int) -> bool:
    """A file under a folder the user named, hidden by a ``.`` or ``_`` segment below that folder."""
    return any(seg.startswith((".", "_")) for seg in path.split("/")[skip:])


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Segment-wise glob match: ``*``/``?``/``[]`` inside a segment, ``**`` for zero or more segments."""
    if not pattern:
        return not parts
    head, tail = pattern[0], pattern[1:]
    if head == "**":  # zero or more segments, none of them hidden
        for i in range(len(parts) + 1):
            if _match(parts[i:], tail):
                return True
            if i < len(parts) and parts[i].startswith((".", "_")):
                return False
        return False
    if not parts:
        return False
    seg = parts[0]
    if seg.startswith((".", "_")) and not head.startswith((".", "_")):
        return False
    return fnmatch.fnmatchcase(seg, head) and _match(parts[1:], tail)


def one_line(exc: BaseException) -> str:
    """The message on one line, without google-cloud-cpp's ``error_info={...}`` appendix (it repeats the message)."""
    text = " ".join(str(exc).split()).split(" error_info={", 1)[0]
    return text or type(exc).__name__


def _where(kwargs: dict[str, Any]) -> str:
    endpoint = kwargs.get("endpoint_override")
    return f"endpoint {kwargs.get('scheme') or 'https'}://{endpoint}" if endpoint else "AWS endpoint"


def _unreachable(fs: pafs.FileSystem, display: str, exc: BaseException) -> str:
    """One line for a listing that failed: the endpoint unreachable, or what the store answered."""
    reason = one_line(exc)
    kind = fs.type_name
    if kind in ("s3", "gcs"):
        endpoint = _endpoint(fs)
        network = (
            "NETWORK_CONNECTION",
            "curlCode",
            "CURL error",
            "Couldn't connect",
            "Could not connect",
            "Could not resolve",
            "Connection refused",
        )
        if any(marker in reason for marker in network):
            return f"{PATH_KEY}: cannot reach {kind} endpoint {endpoint}: {reason}"
        return f"{PATH_KEY}: cannot list {display!r} ({kind} endpoint {endpoint}): {reason}"
    return f"{PATH_KEY}: cannot list {display!r}: {reason}"


def _endpoint(fs: pafs.FileSystem) -> str:
    """The endpoint ``fs`` talks to: its options are exposed only through pickling (secrets stay unprinted)."""
    args = fs.__reduce__()[1]
    options = args[0] if args and isinstance(args[0], dict) else {}
    endpoint = options.get("endpoint_override")
    if endpoint:
        return f"{options.get('scheme') or 'https'}://{endpoint}"
    if fs.type_name == "s3":
        return f"https://s3.{options.get('region') or 'us-east-1'}.amazonaws.com"
    return "https://storage.googleapis.com"
