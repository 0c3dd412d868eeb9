"""Issue 12 through Airflow: the dirty Amplitude day re-loaded from S3 by `amplitude_events`
(dag.test(), as `airflow dags test` runs it) ends `success` with the documented counts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from devtools.sandbox.amplitude import AmplitudeSandbox
from dwh_helper.dwh.repository import open_connection
from dwh_helper.pipeline.amplitude import archive_key
from dwh_helper.sources.amplitude import ExportWindow
from tests.dirty_cases import GOOD, amplitude_dirty_file, check_amplitude_dirty_load

pytestmark = [pytest.mark.airflow, pytest.mark.db, pytest.mark.s3]

DAY = date(2024, 3, 2)


@pytest.fixture
def amplitude_env(airflow_env: str, monkeypatch) -> str:
    with AmplitudeSandbox(seed=11, events_per_hour=1) as sandbox:
        for project in sandbox.projects:
            monkeypatch.setenv(
                f"AIRFLOW_CONN_AMPLITUDE_{project.name.upper()}",
                json.dumps(
                    {
                        "conn_type": "amplitude",
                        "host": sandbox.url,
                        "login": project.api_key,
                        "password": project.secret_key,
                        "extra": {"project_id": project.project_id},
                    }
                ),
            )
        yield airflow_env


def test_dirty_day_reloaded_from_s3_by_the_dag_ends_success(amplitude_env, s3_server, bucket):
    from airflow.models import DagBag

    good, dirty, body = amplitude_dirty_file()
    key = archive_key("web", ExportWindow.for_day(DAY))
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body)
    dag = DagBag().get_dag("amplitude_events")
    conf = {
        "start": DAY.isoformat(),
        "end": DAY.isoformat(),
        "reload_from_s3": True,
        "sources": ["web"],
    }
    run = dag.test(run_conf=conf, logical_date=datetime(2024, 3, 3, 3, tzinfo=UTC))
    assert str(run.state) == "success"
    with open_connection(amplitude_env) as conn:
        check_amplitude_dirty_load(conn, good, dirty, key)
        assert conn.execute(
            "SELECT status, rows_read, rows_rejected, values_nulled, values_repaired, error "
            "FROM load_log WHERE s3_key = %s",
            (key,),
        ).fetchall() == [("loaded", GOOD + len(dirty), 4, 4, 2, None)]
