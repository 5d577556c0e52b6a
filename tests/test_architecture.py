"""The layering docs/architecture.md describes, checked on the source: cores never reach up into stages or the run
directory, a stage never imports another stage, every stage has its module, and the page names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from quadselect.layout import EVALUATION_STAGES, SELECTION_STAGES
from quadselect.pipeline import evaluation_pipeline
from quadselect.select.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "quadselect"
CORES = ("data", "embed", "cluster", "proxy", "influence", "select", "evaluate", "report", "engine")
RUN_LEVEL = ("stages", "run", "pipeline", "layout", "lock", "api", "cli", "compare")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _reaches(imports: set[str], names: tuple[str, ...]) -> list[str]:
    prefixes = tuple(f"quadselect.{name}" for name in names)
    return sorted(i for i in imports if i in prefixes or i.startswith(tuple(f"{p}." for p in prefixes)))


@pytest.mark.parametrize("core", CORES)
def test_core_packages_never_import_stages_or_the_run_level(core: str) -> None:
    offending = {
        str(path.relative_to(PACKAGE)): bad
        for path in sorted((PACKAGE / core).rglob("*.py"))
        if (bad := _reaches(_imports(path), RUN_LEVEL))
    }
    assert not offending, f"core package {core}/ imports run-level modules: {offending}"


def test_one_module_per_stage_and_no_stage_imports_another() -> None:
    stages = SELECTION_STAGES + EVALUATION_STAGES
    modules = {path.stem for path in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert modules == {*stages, "workers"}
    assert list(evaluation_pipeline().stages) == list(stages)
    for name in stages:
        other_stages = tuple(f"stages.{other}" for other in stages if other != name)
        assert not _reaches(_imports(PACKAGE / "stages" / f"{name}.py"), other_stages), name


def test_the_architecture_page_names_every_module_and_stage() -> None:
    methods = PACKAGE / "select" / "methods"  # one module per method: docs/selection-methods.md lists them
    for path in sorted(p for p in PACKAGE.rglob("*.py") if p.parent != methods):
        if path.name == "__init__.py" and path.parent != PACKAGE:
            path = path.parent  # a package is named by its folder
        if path.name == "__init__.py":
            continue
        assert re.search(rf"\b{re.escape(path.stem)}(\.py|/)", ARCHITECTURE), f"docs/architecture.md omits {path}"
    for name in SELECTION_STAGES + EVALUATION_STAGES:
        assert f"| {name} | `stages/{name}.py` |" in ARCHITECTURE, f"docs/architecture.md: no row for stage {name}"


def test_every_registered_method_is_documented() -> None:
    page = (ROOT / "docs" / "selection-methods.md").read_text(encoding="utf-8")
    for name in METHODS:
        assert f"| `{name}` |" in page, f"docs/selection-methods.md: no row for method {name}"
        assert (PACKAGE / "select" / "methods" / f"{name}.py").is_file(), name
