"""The test services' own rules: the benchmarks never import the tests, and every fixture named a service
fixture exists (a renamed fixture would silently drop the ``service`` mark from the tests that use it)."""

from __future__ import annotations

import ast
import importlib

from tests.conftest import REPO, pytest_plugins
from tests.services import SERVICE_FIXTURES


def test_native_bench_never_imports_the_tests() -> None:
    offenders = []
    for path in sorted((REPO / "native_bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not offenders, offenders


def test_every_service_fixture_is_defined_by_a_registered_service_module() -> None:
    defined = {name for module in map(importlib.import_module, pytest_plugins) for name in vars(module)}
    assert not SERVICE_FIXTURES - defined, SERVICE_FIXTURES - defined
