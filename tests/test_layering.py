"""The layering rule: the core never imports Airflow or FastAPI; the API never imports Airflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
CORE = ("sources", "storage", "dwh", "transform", "pipeline", "sandbox")


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
