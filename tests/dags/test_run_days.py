"""Which day a run loads, and when the loading DAGs announce their data (once, after all loads)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dwh_helper.operators.schedule import DEFAULT_DAY, days_to_run, default_day

pytestmark = pytest.mark.airflow

# Triggered at 02:55 UTC on 2024-03-10, before that day's 03:00 scheduled run.
TRIGGERED = datetime(2024, 3, 10, 2, 55, tzinfo=UTC)


def test_a_manual_run_loads_the_day_before_its_trigger_however_triggered():
    ui = default_day("manual", datetime(2024, 3, 8, 3, tzinfo=UTC), TRIGGERED)  # last interval
    cli_or_rest = default_day("manual", None, TRIGGERED)  # no data interval
    assert ui == cli_or_rest == date(2024, 3, 9)


def test_a_scheduled_or_backfill_run_loads_its_data_interval_day():
    interval = datetime(2024, 3, 8, 3, tzinfo=UTC)
    assert default_day("scheduled", interval, TRIGGERED) == date(2024, 3, 8)
    assert default_day("backfill", interval, TRIGGERED) == date(2024, 3, 8)


def test_start_and_end_win_over_the_default():
    params = {"start": "2024-03-01", "end": "2024-03-02"}
    assert days_to_run(params, None, run_type="manual", run_after=TRIGGERED) == [
        date(2024, 3, 1),
        date(2024, 3, 2),
    ]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    return DagBag()


@pytest.mark.parametrize(
    ("dag_id", "uri"),
    [
        ("amplitude_events", "dwh://public/amplitude_events"),
        ("appmetrica_events", "dwh://appmetrica/events"),
    ],
)
def test_the_asset_is_updated_once_after_every_load(dagbag, dag_id, uri):
    dag = dagbag.dags[dag_id]
    assert dag.get_task("load").outlets == []
    publish = dag.get_task("publish")
    assert [asset.uri for asset in publish.outlets] == [uri]
    assert publish.upstream_task_ids == {"load"}
    assert publish.trigger_rule == "all_success"
    assert DEFAULT_DAY in dag.params.get_param("start").description


@pytest.mark.db
@pytest.mark.s3
def test_a_missing_connection_fails_the_run_at_once_naming_the_command(airflow_env, monkeypatch):
    from airflow.models import DagBag

    from dwh_helper.hooks.connection_fields import ConnectionMissing, require_connections

    monkeypatch.delenv("AIRFLOW_CONN_AMPLITUDE_WEB", raising=False)
    with pytest.raises(ConnectionMissing, match=r"airflow connections add amplitude_web"):
        require_connections(["dwh_postgres", "aws_default", "amplitude_web"])

    dag = DagBag().dags["amplitude_events"]
    run = dag.test(
        run_conf={"start": "2024-03-01", "sources": ["web"]},
        logical_date=datetime(2024, 4, 1, 3, tzinfo=UTC),
    )
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["migrate_schema"] == ("failed", 1)  # no retry
    assert states["extract"][0] in ("upstream_failed", None)
