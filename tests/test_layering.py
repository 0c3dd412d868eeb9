"""The layering rule: the core never imports Airflow or FastAPI; the API never imports Airflow;
production code never imports the development tools (`devtools`: sandboxes and the demo)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
CORE = ("catalogue", "sources", "storage", "dwh", "transform", "pipeline")
#: Everything that ships: the Airflow plugin package, the API and the DAG files.
PRODUCTION = ("plugins", "api", "dags")
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, statically or by a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in DYNAMIC_IMPORTS and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    names.add(first.value.split(".")[0])
    return names


def _production_files() -> list[Path]:
    return [path for folder in PRODUCTION for path in (ROOT / folder).rglob("*.py")]


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
        found = _project_imports(path) & {"sources", "pipeline"}
        assert not found, f"{path.relative_to(ROOT)} imports dwh_helper.{sorted(found)}"


def test_the_catalogue_imports_nothing_of_the_project():
    for path in (ROOT / "plugins" / "dwh_helper" / "catalogue").rglob("*.py"):
        assert not _project_imports(path), path.relative_to(ROOT)


def test_production_code_never_imports_devtools():
    files = _production_files()
    assert len(files) > 50, "the production tree was not found"
    offenders = [str(p.relative_to(ROOT)) for p in files if "devtools" in _imports(p)]
    assert not offenders, f"production code imports devtools (sandboxes/demo): {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "import devtools.sandbox.amplitude\n",
        "from devtools.sandbox.s3 import LocalS3\n",
        "def f():\n    from devtools import demo\n",
        "import importlib\nimportlib.import_module('devtools.sandbox.appmetrica')\n",
    ],
)
def test_the_import_check_sees_every_form_of_import(tmp_path, source):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert "devtools" in _imports(path)


def test_devtools_is_not_in_the_shipped_package():
    """`pip install .` packs dwh_helper and api only; no sandbox or demo module is left inside.

    tests/deploy/test_package_install.py installs it and checks `devtools` is not there.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["dwh_helper", "dwh_helper.*", "api", "api.*"]
    assert (ROOT / "devtools" / "__init__.py").is_file()
    package = ROOT / "plugins" / "dwh_helper"
    assert not (package / "sandbox").exists()
    assert not (package / "demo.py").exists()
    leftovers = [p for p in (ROOT / "plugins").rglob("*.py") if p.parts[-2:-1] == ("sandbox",)]
    assert not leftovers, leftovers
