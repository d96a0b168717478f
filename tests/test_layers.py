"""The import layering of pyproject's ``[tool.importlinter]`` holds: CI runs pytest, so this enforces it.

The engine once had circles (worker <-> broker_worker <-> streaming, supervisor <-> distributed) hidden in
function-level imports, and config <-> connectors was one too; the contracts forbid them coming back, keep the
package's layers one way, and keep connectors, checkpoint backends and transports from reaching into the engine.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_contract_is_kept() -> None:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 5
    done = _lint()
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    # every declared contract was checked, and none broke (not merely "the tool ran")
    assert re.search(rf"Contracts: {len(contracts)} kept, 0 broken\.", report), report


def test_lint_imports_sees_function_level_imports(tmp_path: Path) -> None:
    """The old circles were lazy imports: the checker must count them, or the contracts above prove nothing.

    ``launch`` imports ``distributed`` only inside ``make_supervisor``; a contract forbidding it must break.
    """
    config = tmp_path / "probe.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_package = "bizon_fast"\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "probe"\n'
        'type = "forbidden"\n'
        'source_modules = ["bizon_fast.engine.launch"]\n'
        'forbidden_modules = ["bizon_fast.engine.distributed"]\n'
    )
    done = _lint(str(config))
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    assert "probe BROKEN" in report and "bizon_fast.engine.launch -> bizon_fast.engine.distributed" in report, report
