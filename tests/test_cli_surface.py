"""The command line's own surface: --version, choices and defaults in --help, shell completion.

Through a real subprocess, as a user types it: what help renders depends on the typer/click pair
installed (typer 0.29 renders every flag as ``<bool>``), so it is checked on what is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bizon_fast", *args], capture_output=True, text=True, timeout=60, env=full_env
    )


def test_version_prints_the_installed_distribution() -> None:
    for flag in ("--version", "-V"):
        result = cli(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"bizon-fast {metadata.version('bizon-fast')}"


def test_run_help_lists_every_choice_and_default() -> None:
    result = cli("run", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for choices in (
        "thread|process|stream",
        "TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL",
        "all|producer|consumer",
        "text|json",
        "bar|splits",
    ):
        assert choices in text, f"{choices} missing from run --help:\n{text}"
    for default in ("[default: text]", "[default: bar]", "else the CPU count", "else process", "else INFO"):
        assert default in text, f"{default} missing from run --help:\n{text}"
    assert "<bool>" not in text, "flags must render as flags, not <bool> (typer >= 0.29: see pyproject's bound)"
    for flag in ("--dry-run", "--metrics-port", "--log-format", "--progress", "--quiet", "--reset"):
        assert flag in text


@pytest.mark.parametrize("value", ["threads", "info-ish"])
def test_a_value_outside_the_choices_is_one_clear_error(value: str) -> None:
    option = "--runner" if value == "threads" else "--log-level"
    result = cli("run", "configs/quickstart.yml", option, value)
    assert result.returncode == 2
    assert "Invalid value" in result.stderr and value in result.stderr


def test_shell_completion_is_installable_and_completes_commands() -> None:
    top = cli("--help").stdout
    assert "--install-completion" in top and "--show-completion" in top
    script = cli("--show-completion", "bash", env={"SHELL": "/bin/bash"})
    assert script.returncode == 0, script.stderr
    assert "_bizon_fast_completion" in script.stdout
    completed = cli(env={"_BIZON_FAST_COMPLETE": "complete_bash", "COMP_WORDS": "bizon-fast ru", "COMP_CWORD": "1"})
    assert completed.stdout.split() == ["run"]
    options = cli(
        env={"_BIZON_FAST_COMPLETE": "complete_bash", "COMP_WORDS": "bizon-fast run --runner ", "COMP_CWORD": "3"}
    )
    assert options.stdout.split() == ["thread", "process", "stream"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "p.yml", "--role", "everything"], "Error: Invalid value for '--role': 'everything' is not one of"),
        (["run"], "Error: Missing argument 'config'. (see: bizon-fast run --help)"),
        (["nope"], "Error: No such command 'nope'. (see: bizon-fast --help)"),
        (["run", "p.yml", "--workers", "0"], "Error: Invalid value for '--workers' / '-w': 0 is not in the range x>=1"),
    ],
)
def test_bad_command_line_input_is_one_line_exit_2(args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
