"""`pip install .` into a fresh venv gives every production module its dependencies.

The project is installed from a copy of its sources (nothing is built inside the repository)
with `uv pip install` and the lock (`requirements.txt`) as constraints, so the run reuses uv's
cache; then every module of `dwh_helper` and `api` is imported from the installed copy, outside
the source tree. A module importing a package that `pyproject.toml` does not declare fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_EVERY_MODULE = """
import importlib, importlib.util, json, pkgutil
import api, dwh_helper
names = [
    info.name
    for package in (dwh_helper, api)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every module, not only the first
        failed[name] = repr(exc)
from dwh_helper.transform.field_mapping import load_field_mappings
load_field_mappings(None)  # the packaged mapping files are there
files = [api.__file__, dwh_helper.__file__]
shipped = importlib.util.find_spec("devtools") is not None
print(json.dumps({"imported": names, "failed": failed, "files": files, "devtools": shipped}))
"""


def _uv() -> list[str]:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed: run `make install` (it installs uv into .venv)")
    return [found]


def _copy_sources(target: Path) -> Path:
    """What `pip install .` reads: pyproject.toml, README and the two packages."""
    packages = target / "plugins"
    packages.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "plugins" / "dwh_helper", packages / "dwh_helper", ignore=ignore)
    shutil.copytree(ROOT / "api", target / "api", ignore=ignore)
    return target


def test_pip_install_then_import_every_production_module(tmp_path):
    source = _copy_sources(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            *_uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--constraint",
            str(ROOT / "requirements.txt"),
            str(source),
        ],
        check=True,
        timeout=600,
    )
    run = subprocess.run(
        [str(python), "-c", IMPORT_EVERY_MODULE],
        cwd=tmp_path,  # not the repository: imports must come from the installed copy
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "af")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["devtools"] is False  # development code is not installed
    assert all(str(env_dir) in path for path in report["files"])
    assert {"api.main", "dwh_helper.operators.load", "dwh_helper.pipeline.load"} <= set(
        report["imported"]
    )
