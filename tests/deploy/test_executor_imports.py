"""The lock runs the production stack: every class docker-compose.yaml names imports.

`celery==5.7.0` with `apache-airflow-providers-celery==3.26.0` made the CeleryExecutor
unimportable (`cannot import name 'retry' from 'celery.backends.database'`), so the
scheduler and every worker died at start. These tests import what Compose configures,
from the installed lock, and run `pip check` on it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Settings whose value is a dotted path (or a short executor alias) Airflow imports at start.
CLASS_SETTINGS = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER")
# Airflow's short executor names and the class each one loads.
EXECUTOR_ALIASES = {
    "LocalExecutor": "airflow.executors.local_executor.LocalExecutor",
    "CeleryExecutor": "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
    "CeleryKubernetesExecutor": (
        "airflow.providers.celery.executors.celery_kubernetes_executor.CeleryKubernetesExecutor"
    ),
}
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def compose_class_paths() -> set[str]:
    """Every executor and auth-manager class any service of docker-compose.yaml sets."""
    document = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    blocks = [document.get("x-airflow-common", {}).get("environment", {})]
    blocks += [service.get("environment") or {} for service in document["services"].values()]
    paths: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for setting in CLASS_SETTINGS:
            value = block.get(setting)
            if value:
                for name in str(value).split(","):
                    name = name.strip().split(":")[-1]
                    paths.add(EXECUTOR_ALIASES.get(name, name))
    return paths


def import_path(path: str) -> object:
    """Import `package.module.Attribute` and return the attribute."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def test_compose_names_the_celery_executor_and_fab() -> None:
    paths = compose_class_paths()
    assert EXECUTOR_ALIASES["CeleryExecutor"] in paths
    assert any(path.endswith("FabAuthManager") for path in paths)


@pytest.mark.parametrize("path", sorted(compose_class_paths()))
def test_every_class_compose_names_imports(path: str) -> None:
    cls = import_path(path)
    assert isinstance(cls, type), f"{path} is not a class"


def test_celery_executor_and_its_app_import() -> None:
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    app = import_path(CELERY_APP)
    assert CeleryExecutor.__name__ == "CeleryExecutor"
    assert app.main == "airflow.providers.celery.executors.celery_executor"


def test_celery_worker_command_loads() -> None:
    """`airflow celery worker --help` imports the worker path the compose workers run."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "celery", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--concurrency" in result.stdout
    assert "only available in Airflow" not in result.stdout + result.stderr


def test_pip_check_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
