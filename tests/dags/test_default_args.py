"""The DAGs' retry delay is the ETL_RETRY_DELAY setting, 2 minutes unless set."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest

from dwh_helper.config import SettingsError
from dwh_helper.operators import schedule

pytestmark = pytest.mark.airflow


@pytest.fixture
def reload_schedule(monkeypatch, tmp_path):
    """Re-import operators/schedule.py under the test's environment (no .env file)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ETL_RETRY_DELAY", raising=False)
    yield lambda: importlib.reload(schedule)
    monkeypatch.undo()
    importlib.reload(schedule)


def test_the_first_retry_waits_two_minutes_by_default(reload_schedule):
    args = reload_schedule().DEFAULT_ARGS
    assert args["retry_delay"] == timedelta(minutes=2)
    assert (args["retries"], args["max_retry_delay"]) == (3, timedelta(minutes=30))


def test_etl_retry_delay_sets_the_first_retry_delay(reload_schedule, monkeypatch):
    monkeypatch.setenv("ETL_RETRY_DELAY", "2.5")
    assert reload_schedule().DEFAULT_ARGS["retry_delay"] == timedelta(seconds=2.5)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_retry_delay_names_the_variable(reload_schedule, monkeypatch, value):
    monkeypatch.setenv("ETL_RETRY_DELAY", value)
    with pytest.raises(SettingsError, match="ETL_RETRY_DELAY"):
        reload_schedule()
