"""`.env.example` lists every setting the library and the API read, with a comment each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dwh_helper.config import _BLOCKS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _documented() -> dict[str, str]:
    """Variable → the comment line just above it (commented-out variables count)."""
    names: dict[str, str] = {}
    previous = ""
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z_][A-Z0-9_]*)=", line)
        if match:
            names[match.group(1)] = previous
        previous = line if line.startswith("#") else ""
    return names


def _setting_variables() -> set[str]:
    from api.settings import ApiSettings

    classes = [*_BLOCKS.values(), ApiSettings]
    return {
        (cls.model_config.get("env_prefix", "") + field).upper()
        for cls in classes
        for field in cls.model_fields
    }


def test_every_setting_is_in_env_example_with_a_comment():
    documented = _documented()
    missing = _setting_variables() - set(documented)
    assert not missing, f".env.example lacks {sorted(missing)}"
    uncommented = [name for name in _setting_variables() if not documented[name].startswith("#")]
    assert not uncommented, f"no comment above {sorted(uncommented)}"


def test_env_example_holds_the_five_airflow_connections():
    documented = _documented()
    for conn in (
        "AMPLITUDE_WEB",
        "AMPLITUDE_MOBILE",
        "APPMETRICA_DEFAULT",
        "AWS_DEFAULT",
        "DWH_POSTGRES",
    ):
        assert f"AIRFLOW_CONN_{conn}" in documented
