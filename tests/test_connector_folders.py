"""A connector is a folder: its config (light imports), its implementation, and an example pipeline that validates.

Every folder of ``connectors/sources`` and ``connectors/destinations`` is found by scanning, so a new
connector is checked here without touching this file.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.connectors import registry
from bizon_fast.connectors.pipeline import load_config

CONNECTORS = Path(registry.__file__).parent
SOURCES = registry.source_names()
DESTINATIONS = registry.builtin_destination_names()
#: modules a connector's config must not pull in: validation runs where the optional libraries are missing
HEAVY = ("pyarrow", "polars", "google", "psycopg", "confluent_kafka", "pika")


def test_every_builtin_is_a_folder() -> None:
    assert set(SOURCES) >= {"dummy", "kafka", "postgres", "synthetic"}
    assert set(DESTINATIONS) == {
        "bigquery",
        "bigquery_streaming",
        "bigquery_streaming_v2",
        "file",
        "logger",
        "noop",
        "postgres",
    }


@pytest.mark.parametrize("name", SOURCES)
def test_source_example_validates(name: str) -> None:
    cfg = load_config(CONNECTORS / "sources" / name / "example.yml")
    assert cfg.source.name == name


@pytest.mark.parametrize("name", DESTINATIONS)
def test_destination_example_validates(name: str) -> None:
    cfg = load_config(CONNECTORS / "destinations" / name / "example.yml")
    assert cfg.destination.name == name
    assert isinstance(cfg.destination.config, registry.destination_config_class(name))


@pytest.mark.parametrize("name", DESTINATIONS)
def test_destination_class_declares_its_folder(name: str) -> None:
    """The class carries the folder's declaration: validation and the engine read the same capabilities."""
    declared = importlib.import_module(f"{registry.DESTINATIONS_PACKAGE}.{name}.config")
    cls = registry.destination_class(name)
    assert cls.name == name
    assert cls.config_class is declared.CONFIG_CLASS
    assert cls.capabilities is declared.CAPABILITIES
    assert isinstance(cls.capabilities, DestinationCapabilities)
    assert registry.destination_capabilities(name) is declared.CAPABILITIES


def test_connector_configs_import_light() -> None:
    """Every connector's config.py imports without pyarrow, Google, psycopg or Kafka libraries."""
    modules = [f"{registry.DESTINATIONS_PACKAGE}.{name}.config" for name in DESTINATIONS]
    modules += [
        f"bizon_fast.connectors.sources.{name}.config"
        for name in SOURCES
        if (CONNECTORS / "sources" / name / "config.py").is_file()
    ]
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import bizon_fast.config.pipeline\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    "folder",
    [f"sources/{n}" for n in SOURCES if (CONNECTORS / "sources" / n / "config.py").is_file()]
    + [f"destinations/{n}" for n in DESTINATIONS],
)
def test_worker_imports_name_modules_of_the_connector_or_its_libraries(folder: str) -> None:
    """What a connector declares for the fork server to import (``WORKER_IMPORTS``, engine/warm.py) imports,
    and names its own implementation: a typo or a moved module would silently stop the warm-up."""
    config = importlib.import_module(f"bizon_fast.connectors.{folder.replace('/', '.')}.config")
    declared = getattr(config, "WORKER_IMPORTS", ())
    for module in declared:
        importlib.import_module(module)
    assert not declared or declared[0].startswith(f"bizon_fast.connectors.{folder.replace('/', '.')}.")


def test_validation_reads_capabilities() -> None:
    """bizon's wrapper-level buffer_size, the default alias and --reset follow the declared capabilities."""
    from bizon_fast.connectors.pipeline import parse_config

    def pipeline(dest: str, **extra: object) -> dict[str, object]:
        config = {"project_id": "p", "dataset_id": "d"} if dest.startswith("bigquery") else {}
        return {
            "name": "caps",
            "source": {"name": "synthetic", "stream": "events", "sync_mode": "incremental", "reset": True},
            "destination": {"name": dest, "config": config, **extra},
        }

    for dest in DESTINATIONS:
        caps = registry.destination_capabilities(dest)
        assert caps is not None
        raw = pipeline(dest, buffer_size=7) if caps.wrapper_buffer_size else pipeline(dest)
        if dest == "postgres":
            raw["destination"]["config"] = {"dsn": "postgresql://u@h/db"}  # type: ignore[index]
        if not caps.supports_reset:
            with pytest.raises(Exception, match="cannot reset a stream"):
                parse_config(raw)
            continue
        cfg = parse_config(raw)
        assert cfg.destination.alias == (caps.default_alias or dest)
        if caps.wrapper_buffer_size:
            assert cfg.destination.config.buffer_size == 7


@pytest.mark.parametrize(("name", "delivery"), [("noop", "exactly-once"), ("logger", "at-least-once")])
def test_run_says_its_delivery(tmp_path: Path, cli, name: str, delivery: str) -> None:  # noqa: ANN001 - fixture
    """The run's summary and log say the delivery the destination declares."""
    (tmp_path / "p.yml").write_text(
        "name: delivery\n"
        "source: {name: synthetic, stream: events, rows: 100, splits: 1}\n"
        f"destination: {{name: {name}, config: {{}}}}\n"
        "engine: {runner: {type: thread, config: {max_workers: 1}}}\n"
    )
    res = cli("run", "p.yml")
    assert res.returncode == 0, res.stderr
    assert "delivery" in res.stdout and delivery in res.stdout
    log = next((tmp_path / "logs").glob("*.log")).read_text()
    assert f"destination {name}, delivery: {delivery}" in log
