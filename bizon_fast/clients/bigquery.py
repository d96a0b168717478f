"""One place that builds BigQuery clients from a config.

Credentials: a service account key (a file path, or the key's JSON itself) when the config gives one,
else application default credentials. bizon dropped the key of its checkpoint backend; it is honoured here.

The only test seam is an endpoint override: ``BIZON_FAST_BIGQUERY_ENDPOINT`` (REST, e.g.
``http://127.0.0.1:9050``) and ``BIZON_FAST_BIGQUERY_GRPC`` (Storage API, ``127.0.0.1:9060``) point the
real client libraries at an emulator, with anonymous credentials. An override together with a configured
service account key is refused (a UserError naming both): the key means a real project, and silently
sending its run to an emulator, or an emulator run with a real key, is a mistake either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bizon_fast.errors import UserError

ENDPOINT_ENV = "BIZON_FAST_BIGQUERY_ENDPOINT"
GRPC_ENV = "BIZON_FAST_BIGQUERY_GRPC"
#: API calls are retried for at most this long (the library's default is 600 s, which hides a dead endpoint)
RETRY_DEADLINE_S = 120.0


def emulated() -> bool:
    return bool(os.environ.get(ENDPOINT_ENV))


def refuse_key_with_override(service_account_key: str | None, key_path: str, env: str = ENDPOINT_ENV) -> None:
    """A UserError when the emulator override ``env`` is set and a service account key is configured.

    Anonymous credentials are only right for an emulator; a key is only right for the real service. With
    both, one of them is a leftover (an exported test variable, a copied config), and guessing which one
    the user meant either ignores their key or sends a real key's run to a local endpoint.
    """
    if os.environ.get(env) and service_account_key and service_account_key.strip():
        raise UserError(
            f"{env} is set (an emulator endpoint: {os.environ[env]}) and {key_path} is configured; "
            f"unset {env} to use the key, or remove the key to run against the emulator"
        )


def credentials(service_account_key: str | None, key_path: str) -> Any:
    """Credentials for ``service_account_key`` (path or JSON text); None means application default credentials.

    Anonymous credentials only when ``BIZON_FAST_BIGQUERY_ENDPOINT`` is set and no key is configured
    (with a key it is refused, see ``refuse_key_with_override``).
    """
    refuse_key_with_override(service_account_key, key_path)
    if emulated():
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    if not service_account_key:
        return None
    from google.oauth2 import service_account

    text = service_account_key.strip()
    try:
        if text.startswith("{"):
            info = json.loads(text)
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise UserError(f"{key_path}: no such service account key file: {path}")
            info = json.loads(path.read_text())
        return service_account.Credentials.from_service_account_info(
            info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except (ValueError, KeyError) as exc:
        raise UserError(f"{key_path}: not a valid service account key: {exc}") from None


def bigquery_client(
    project: str, service_account_key: str | None, *, key_path: str, location: str | None = None
) -> Any:
    """A ``google.cloud.bigquery.Client`` for ``project`` (see the module docstring for credentials)."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import bigquery

    options = ClientOptions(api_endpoint=os.environ[ENDPOINT_ENV]) if emulated() else None
    try:
        return bigquery.Client(
            project=project,
            credentials=credentials(service_account_key, key_path),
            location=location,
            client_options=options,
        )
    except Exception as exc:  # DefaultCredentialsError and friends: name the key to set
        if isinstance(exc, UserError):
            raise
        raise UserError(
            f"{key_path}: cannot build a BigQuery client ({type(exc).__name__}: {exc}); set a service account key "
            "or configure application default credentials (gcloud auth application-default login)"
        ) from None


def write_client(service_account_key: str | None, *, key_path: str) -> Any:
    """A Storage Write API ``BigQueryWriteClient`` (gRPC, insecure channel to the emulator when overridden)."""
    from google.cloud import bigquery_storage_v1

    target = os.environ.get(GRPC_ENV)
    if target:
        refuse_key_with_override(service_account_key, key_path, GRPC_ENV)
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport

        channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        )
        return bigquery_storage_v1.BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))
    return bigquery_storage_v1.BigQueryWriteClient(credentials=credentials(service_account_key, key_path))


def retry() -> Any:
    """The library's retry policy with a bounded deadline."""
    from google.cloud import bigquery

    return bigquery.DEFAULT_RETRY.with_deadline(RETRY_DEADLINE_S)
