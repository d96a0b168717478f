"""bizon's built-in sources by their bizon names (issue 14, items 1 and 6), through the CLI.

Without the ``bizon`` extra (the main test venv) their names give one line saying which install brings them.
With it (the layered venv of :mod:`tests.bizon_env`) ``source list`` shows all ten, bizon's example configs
for them validate, and the real bizon 0.6.4 pokeapi and hubspot connectors run on bizon-fast's engine against
a local server. Their base URLs are constants in bizon's code, so the test reaches them at the HTTP boundary:
``HTTPS_PROXY`` points ``requests`` at a loopback proxy that accepts ``CONNECT pokeapi.co:443`` (and
``api.hubapi.com``), terminates TLS with a certificate from a throwaway CA (``REQUESTS_CA_BUNDLE``) and serves
the pages itself. bizon's connector code, its session and ``requests`` run unchanged.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.bizon_env import BizonEnv, bizon_env  # noqa: F401 - bizon_env is the session fixture
from tests.conftest import run_cli

BIZON_SOURCES = ["cycle", "dummy", "gbif", "gsheets", "hubspot", "kafka", "notion", "periscope", "pokeapi", "sana_ai"]
NATIVE_TOO = {"dummy", "kafka"}
EXTRA = "pip install 'bizon-fast[bizon]'"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- without the extra (the main venv)


def test_without_the_extra_bizon_names_say_which_install_brings_them(tmp_path: Path) -> None:
    listing = run_cli("source", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split(" - ")[0]: line for line in listing.stdout.splitlines() if " - " in line}
    assert set(BIZON_SOURCES) <= set(lines)
    for name in set(BIZON_SOURCES) - NATIVE_TOO:
        assert lines[name] == f'{name} - NOT AVAILABLE, run "{EXTRA}" to install bizon\'s sources.'
    assert lines["dummy"] == "dummy - ['creatures', 'plants']"  # bizon-fast's own: no bizon to shadow here

    streams = run_cli("stream", "list", "hubspot", cwd=tmp_path)
    assert streams.returncode == 2
    assert streams.stderr.strip() == f"Error: 'hubspot' is one of bizon's sources: {EXTRA} brings it"

    unknown = run_cli("stream", "list", "nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("Error: Source nope not found; available: dummy, ")

    (tmp_path / "p.yml").write_text(
        "name: p\nsource:\n  name: pokeapi\n  stream: pokemon\ndestination:\n  name: logger\n  config: {}\n"
    )
    run = run_cli("run", "p.yml", "-q", cwd=tmp_path)
    assert run.returncode == 2
    assert f"source.name: 'pokeapi' is one of bizon's sources: {EXTRA} brings it; available: " in run.stderr


def test_requests_is_a_dependency() -> None:
    """bizon's ``AbstractSource`` promises ``self.session``: the base install must bring ``requests``."""
    from importlib.metadata import requires

    assert any(r.split(";")[0].replace(" ", "").startswith("requests>=") for r in requires("bizon-fast") or [])


# ---------------------------------------------------------------- with the extra: listings and examples


def test_source_list_shows_all_ten_bizon_sources(tmp_path: Path, bizon_env: BizonEnv) -> None:  # noqa: F811
    listing = bizon_env.run_cli("source", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split(" - ")[0]: line for line in listing.stdout.splitlines() if " - " in line}
    assert set(BIZON_SOURCES) <= set(lines), listing.stdout
    assert lines["pokeapi"] == "pokeapi - ['pokemon', 'berry', 'item'] (bizon's)"
    assert lines["hubspot"] == "hubspot - ['contacts', 'companies', 'deals'] (bizon's)"
    for name in set(BIZON_SOURCES) - NATIVE_TOO:
        assert lines[name].endswith("] (bizon's)"), lines[name]
    for name in NATIVE_TOO:  # bizon-fast's connector wins the clash, and says so
        assert lines[name].endswith(f" (bizon-fast's; used instead of bizon's {name})"), lines[name]
    assert lines["synthetic"] == "synthetic - ['events']"

    streams = bizon_env.run_cli("stream", "list", "hubspot", cwd=tmp_path)
    assert streams.returncode == 0, streams.stderr
    assert streams.stdout.splitlines() == [
        "Available streams for hubspot:",
        "[Full refresh only] - contacts",
        "[Full refresh only] - companies",
        "[Full refresh only] - deals",
    ]
    unknown = bizon_env.run_cli("stream", "list", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "Error: Source nope not found; available: " in unknown.stderr


VALIDATE_EXAMPLES = """
import json, sys
from pathlib import Path
from bizon_fast.compat import real_bizon_root
from bizon_fast.config.load import read_raw_config
from bizon_fast.config.source import validate_source
from bizon_fast.connectors import registry
from bizon_fast.connectors.discovery import bizon_source_classes

verdicts = {}
for example in sorted((real_bizon_root() / "connectors" / "sources").glob("*/config/*.example.yml")):
    name = example.parts[-3]
    if name in sys.argv[1:]:
        continue
    raw = read_raw_config(example)
    stream = raw["source"]["stream"]
    model = next(c for c in bizon_source_classes(name) if stream in c.streams()).bizon_class.get_config_class()
    try:  # bizon's own verdict on the block: its config class, as `bizon config validate` applies it
        model.model_validate(raw["source"])
        bizon_verdict = "valid"
    except Exception as exc:
        bizon_verdict = "invalid"
    try:
        validated = validate_source(raw["source"], registry)
        ours = "valid" if isinstance(validated, model) else f"wrong class {type(validated).__mro__}"
    except Exception as exc:
        ours = "invalid"
    verdicts[f"{name}/{example.name}"] = [bizon_verdict, ours]
print(json.dumps(verdicts))
"""


def test_bizon_example_configs_validate_their_source_block(tmp_path: Path, bizon_env: BizonEnv) -> None:  # noqa: F811
    """Every example config shipped with bizon's sources: its ``source:`` block validates with the source's own
    bizon config class (the whole files, destinations included, are issue 14 item 4's table)."""
    script = tmp_path / "validate.py"
    script.write_text(VALIDATE_EXAMPLES)
    res = subprocess.run(
        [str(bizon_env.python), str(script), *NATIVE_TOO], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    verdicts = json.loads(res.stdout.strip().splitlines()[-1])
    sources = {key.split("/")[0] for key in verdicts}
    assert sources == set(BIZON_SOURCES) - NATIVE_TOO
    assert {key: ours for key, (bizon, ours) in verdicts.items() if ours != bizon} == {}
    # bizon 0.6.4's periscope examples lack the x_csrf_token their own model requires: bizon rejects them too
    assert {key for key, (bizon, _) in verdicts.items() if bizon == "invalid"} == {
        "periscope/periscope_charts.example.yml",
        "periscope/periscope_dashboards.example.yml",
    }


# ---------------------------------------------------------------- with the extra: runs against a local server


def _tls_files(folder: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for ``hosts``, from a throwaway CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bizon-fast test CA")])

    def builder(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


#: (host, method, path, query params) -> the JSON document served; None: 404
Route = Callable[[str, str, str, dict[str, str]], Any]


class FakeApis:
    """A loopback HTTPS proxy that answers for the hosts it knows: CONNECT, TLS, then requests from ``route``."""

    HOSTS = ["pokeapi.co", "api.hubapi.com"]

    def __init__(self, folder: Path) -> None:
        self.ca, cert, key = _tls_files(folder, self.HOSTS)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.route: Route = lambda *_: None
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        apis = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            host = ""

            def log_message(self, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
                host = self.path.rsplit(":", 1)[0]
                if host not in apis.HOSTS:
                    self.send_error(403, f"{host} is not served here")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                tls = apis.tls.wrap_socket(self.connection, server_side=True)
                self.connection, self.host = tls, host
                self.rfile, self.wfile = tls.makefile("rb"), tls.makefile("wb")
                self.close_connection = False  # the tunnel's requests follow on this connection

            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                params = dict(parse_qsl(url.query))
                apis.requests.append(
                    {
                        "host": self.host,
                        "method": self.command,
                        "path": url.path,
                        "params": params,
                        "auth": self.headers.get("Authorization"),
                        "body": body.decode(),
                    }
                )
                document = apis.route(self.host, self.command, url.path, params) if self.host else None
                payload = json.dumps(document if document is not None else {"message": "not found"}).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

        return Handler

    def env(self) -> dict[str, str]:
        """What points ``requests`` in the run's processes at this proxy and its CA."""
        proxy = f"http://127.0.0.1:{self.server.server_address[1]}"
        return {
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "localhost,127.0.0.1",
            "no_proxy": "localhost,127.0.0.1",
            "REQUESTS_CA_BUNDLE": str(self.ca),
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def apis(tmp_path: Path) -> Iterator[FakeApis]:
    pytest.importorskip("cryptography", reason="the test CA is made with cryptography (a test dependency)")
    server = FakeApis(tmp_path)
    yield server
    server.close()


POKEMON = [{"name": f"pokemon-{i}", "url": f"https://pokeapi.co/api/v2/pokemon/{i}/"} for i in range(1, 6)]


def _pokeapi(host: str, method: str, path: str, params: dict[str, str]) -> Any:
    if (host, method, path) != ("pokeapi.co", "GET", "/api/v2/pokemon"):
        return None
    offset = int(params.get("offset", 0))
    following = offset + 2
    return {
        "count": len(POKEMON),
        "next": f"https://pokeapi.co/api/v2/pokemon?offset={following}&limit=2" if following < len(POKEMON) else None,
        "previous": None,
        "results": POKEMON[offset:following],
    }


def test_pokeapi_runs_against_a_local_server(tmp_path: Path, bizon_env: BizonEnv, apis: FakeApis) -> None:  # noqa: F811
    apis.route = _pokeapi
    (tmp_path / "pokemon.yml").write_text(
        "name: pokemon to file\nsource:\n  name: pokeapi\n  stream: pokemon\n"
        "destination:\n  name: file\n  config:\n    destination_id: pokemon\n"
    )
    res = bizon_env.run_cli("run", "pokemon.yml", "-q", "--workers", "1", cwd=tmp_path, env=apis.env())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _lines(tmp_path / "pokemon.json")
    assert [json.loads(line["source_data"]) for line in lines] == POKEMON  # the pages served, in order, exact
    assert [line["source_record_id"] for line in lines] == [p["name"] for p in POKEMON]
    pages = {r["params"].get("offset", "0") for r in apis.requests if r["path"] == "/api/v2/pokemon"}
    assert pages == {"0", "2", "4"}


PROPERTIES = [
    {"name": "email", "label": "Email", "fieldType": "text", "type": "string", "description": "Contact email"},
    {"name": "firstname", "label": "First name", "fieldType": "text", "type": "string"},
]
CONTACTS = [
    {
        "id": str(100 + i),
        "properties": {"email": f"c{i}@example.com", "firstname": f"Name {i}", "hs_object_id": str(100 + i)},
        "createdAt": f"2025-01-0{i}T10:00:00.000Z",
        "updatedAt": f"2025-02-0{i}T10:00:00.000Z",
        "archived": False,
    }
    for i in range(1, 6)
]


def _hubspot(page_size: int) -> Route:
    """HubSpot's CRM API for ``CONTACTS``, ``page_size`` objects a page (``paging.next`` while more follow)."""

    def route(host: str, method: str, path: str, params: dict[str, str]) -> Any:
        if host != "api.hubapi.com":
            return None
        if (method, path) == ("GET", "/crm/v3/properties/contacts"):
            return {"results": PROPERTIES}
        if (method, path) == ("POST", "/crm/v3/objects/contacts/search"):
            return {"total": len(CONTACTS), "results": []}
        if (method, path) == ("GET", "/crm/v3/objects/contacts"):
            start = int(params.get("after", 0))
            end = start + page_size
            page: dict[str, Any] = {"results": CONTACTS[start:end]}
            if end < len(CONTACTS):
                link = f"https://api.hubapi.com/crm/v3/objects/contacts?after={end}"
                page["paging"] = {"next": {"after": str(end), "link": link}}
            return page
        return None

    return route


HUBSPOT = """name: hubspot contacts to file
source:
  name: hubspot
  stream: contacts
  properties:
    strategy: all
  authentication:
    type: api_key
    params:
      token: test-token
destination:
  name: file
  config:
    destination_id: contacts
"""


def test_hubspot_runs_against_a_local_server(tmp_path: Path, bizon_env: BizonEnv, apis: FakeApis) -> None:  # noqa: F811
    """One page, which bizon 0.6.4's hubspot returns as a bare ``({}, results)`` tuple: bizon itself then fails
    (``'tuple' object has no attribute 'records'``); the adapter takes bizon's older page contract."""
    apis.route = _hubspot(page_size=100)
    (tmp_path / "hubspot.yml").write_text(HUBSPOT)
    res = bizon_env.run_cli("run", "hubspot.yml", "-q", "--workers", "1", cwd=tmp_path, env=apis.env())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _lines(tmp_path / "contacts.json")
    assert [json.loads(line["source_data"]) for line in lines] == CONTACTS  # the page served, exact
    assert [line["source_record_id"] for line in lines] == [c["id"] for c in CONTACTS]
    listed = [r for r in apis.requests if r["path"] == "/crm/v3/objects/contacts"]
    assert listed and {r["params"]["properties"] for r in listed} == {"email,firstname"}  # from the properties API
    assert {r["auth"] for r in apis.requests} == {"Bearer test-token"}  # bizon's token authenticator


def test_hubspot_check_connection_fails_on_several_pages_as_in_bizon(
    tmp_path: Path,
    bizon_env: BizonEnv,  # noqa: F811
    apis: FakeApis,
) -> None:
    """bizon 0.6.4's hubspot ``check_connection`` unpacks ``get()`` in two, which a ``SourceIteration`` (a next
    page) does not: bizon's runner and bizon-fast's supervisor both stop there, before any job, with its error."""
    apis.route = _hubspot(page_size=2)
    (tmp_path / "hubspot.yml").write_text(HUBSPOT)
    res = bizon_env.run_cli("run", "hubspot.yml", "-q", "--workers", "1", cwd=tmp_path, env=apis.env())
    assert res.returncode == 1
    assert "source 'hubspot' check_connection failed: ValueError('too many values to unpack" in res.stderr
    assert not (tmp_path / "contacts.json").exists()
