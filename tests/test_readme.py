"""Every command and file the README names exists; every setting is documented there."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from dwh_helper.config import _BLOCKS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.MULTILINE))


def test_every_make_target_exists():
    named = set(re.findall(r"(?:^|`)make ([a-z][a-z0-9-]*)", README, flags=re.MULTILINE))
    assert {"demo", "test", "api", "run"} <= named
    assert named <= _make_targets(), f"missing make targets: {named - _make_targets()}"


def test_the_quick_start_is_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", quick, flags=re.DOTALL)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci, ".ci/run must run the README's test command verbatim"


def test_every_python_module_entry_point_exists():
    modules = set(re.findall(r"python -m ([a-z_][a-z0-9_.]*)", README))
    assert "devtools.demo" in (ROOT / "Makefile").read_text()
    assert modules, "the README names no module entry point"
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
        package = importlib.util.find_spec(module)
        if package.submodule_search_locations:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_every_linked_file_exists():
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    paths = re.findall(r"`((?:plugins|dags|docs|bench|api|tests)/[\w./-]+)`", README)
    assert links
    for link in {*links, *paths}:
        assert (ROOT / link).exists(), f"README names {link}, which does not exist"


def test_uvicorn_target_exists():
    assert "uvicorn api.main:app" in README
    spec = importlib.util.find_spec("api.main")
    assert spec is not None


def test_every_setting_is_in_the_configuration_table():
    from api.settings import ApiSettings

    for cls in [*_BLOCKS.values(), ApiSettings]:
        prefix = cls.model_config.get("env_prefix", "")
        for field in cls.model_fields:
            variable = (prefix + field).upper()
            assert f"| `{variable}` |" in README, f"{variable} is not in the README's table"


def test_every_dag_is_documented():
    for dag_file in (ROOT / "dags").glob("*.py"):
        assert f"`{dag_file.stem}`" in README, f"DAG {dag_file.stem} is not in the README"
