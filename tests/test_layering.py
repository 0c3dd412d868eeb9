"""The layering rule: the core never imports Airflow or FastAPI; the API never imports Airflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
CORE = ("catalogue", "sources", "storage", "dwh", "transform", "pipeline", "sandbox")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", CORE)
def test_core_imports_neither_airflow_nor_fastapi(package):
    for path in (ROOT / "plugins" / "dwh_helper" / package).rglob("*.py"):
        found = _imports(path) & {"airflow", "fastapi", "api"}
        assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"


def test_api_never_imports_airflow():
    for path in (ROOT / "api").rglob("*.py"):
        assert "airflow" not in _imports(path), path.relative_to(ROOT)


def _project_imports(path: Path) -> set[str]:
    """The `dwh_helper` packages a module imports (`dwh_helper.dwh.tables` → `dwh`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "dwh_helper" and len(parts) > 1:
                names.add(parts[1])
    return names


@pytest.mark.parametrize("package", ["transform", "dwh"])
def test_transform_and_dwh_never_import_sources(package):
    for path in (ROOT / "plugins" / "dwh_helper" / package).rglob("*.py"):
        found = _project_imports(path) & {"sources", "pipeline", "sandbox"}
        assert not found, f"{path.relative_to(ROOT)} imports dwh_helper.{sorted(found)}"


def test_the_catalogue_imports_nothing_of_the_project():
    for path in (ROOT / "plugins" / "dwh_helper" / "catalogue").rglob("*.py"):
        assert not _project_imports(path), path.relative_to(ROOT)
