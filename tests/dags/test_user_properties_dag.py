"""The `user_properties` DAG: imports cleanly, and runs end to end with dag.test()."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from devtools.sandbox.amplitude_events import generate_hour
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.tables import TMP_USER_PROPERTIES

pytestmark = pytest.mark.airflow

HOUR = datetime(2024, 3, 2, 10)
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "user_properties.py"


@pytest.fixture
def dwh_conn_env(dwh_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`dwh_postgres` as an AIRFLOW_CONN_ variable pointing at the test's database."""
    params = psycopg.conninfo.conninfo_to_dict(dwh_dsn)
    value = json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host", "127.0.0.1"),
            "port": int(params.get("port", 5432)),
            "login": params.get("user", "postgres"),
            "password": params.get("password"),
            "schema": params["dbname"],
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_DWH_POSTGRES", value)
    return value


def _dag():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["user_properties"]


def test_dag_imports_with_schedule_params_and_retries():
    dag = _dag()
    assert dag is not None
    assert [task.task_id for task in dag.topological_sort()] == [
        "migrate_schema",
        "migrate_user_properties",
    ]
    assert "user-properties" in dag.tags and dag.doc_md and not dag.catchup
    assert set(dag.params.keys()) == {"since", "until", "batch_size", "strict"}
    assert dag.params["batch_size"] == 5000 and dag.params["strict"] is False
    assert "dwh://public/amplitude_events" in str(dag.timetable.asset_condition)
    for task in dag.tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff
    operator = dag.get_task("migrate_user_properties")
    assert {"since", "until", "batch_size", "strict"} <= set(operator.template_fields)


def _seed_from_sandbox(dsn: str, count: int) -> int:
    events = generate_hour(374182, HOUR, seed=5, count=count)
    with open_connection(dsn) as conn:
        Repository(conn).copy_rows(
            TMP_USER_PROPERTIES,
            [
                (
                    event["uuid"],
                    event["user_properties"],
                    event["language"],
                    event["session_id"],
                    event["start_version"],
                    event["event_time"],
                    False,
                )
                for event in events
            ],
        )
    return len(events)


def test_dag_test_migrates_sandbox_user_properties(airflow_db, dwh_dsn, dwh_conn_env, monkeypatch):
    monkeypatch.setenv("ETL_REJECT_RATIO", "0.2")
    seeded = _seed_from_sandbox(dwh_dsn, 400)
    dag = _dag()
    run = dag.test(
        logical_date=datetime(2024, 3, 3, tzinfo=UTC),
        run_conf={"since": "2024-03-02", "until": "2024-03-02", "batch_size": 50},
    )
    assert run.state == "success"
    with open_connection(dwh_dsn) as conn:
        pending = conn.execute(
            "SELECT count(*) FROM tmp_user_properties WHERE NOT migrated"
        ).fetchone()[0]
        rejects = conn.execute(
            "SELECT count(*) FROM load_rejects WHERE source = 'user_properties' AND kind = 'record'"
        ).fetchone()[0]
        nulled = conn.execute(
            "SELECT count(*) FROM load_rejects WHERE source = 'user_properties' AND kind = 'value'"
        ).fetchone()[0]
        outside = conn.execute(
            "SELECT count(*) FROM tmp_user_properties WHERE event_time < '2024-03-02' "
            "OR event_time >= '2024-03-03'"
        ).fetchone()[0]
        people = conn.execute("SELECT count(*) FROM permanent_user_properties").fetchone()[0]
        history = conn.execute("SELECT count(*) FROM changeable_user_properties").fetchone()[0]
    assert pending == rejects + outside
    assert rejects < seeded // 10
    assert 0 < people < seeded
    assert people <= history < seeded
    result = run.get_task_instance("migrate_user_properties").xcom_pull(
        task_ids="migrate_user_properties"
    )
    assert result["processed"] + result["rejected"] == seeded - outside
    assert result["rejected"] == rejects and result["batches"] >= (seeded - outside) // 50
    assert result["values_nulled"] == nulled
    assert result["permanent_inserted"] == people
    assert result["changeable_inserted"] == history
    assert result["unknown_keys"].get("Ehr Count", 0) > 0


def test_operator_fails_without_retry_on_bad_input(airflow_db, dwh_dsn, dwh_conn_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from dwh_helper.operators.user_properties import MigrateUserPropertiesOperator

    bad = tmp_path / "mapping.yaml"
    bad.write_text("permanent: []\n", encoding="utf-8")
    cases = [
        ({"mapping_path": str(bad)}, "mapping.yaml: invalid field mapping"),
        ({"batch_size": "many"}, "batch_size must be an integer"),
        ({"strict": "maybe"}, "strict must be true or false"),
        ({"since": "2024-13-45"}, "since must be a date"),
        ({"source": "ftp"}, "source must be tmp_table or s3"),
        ({"max_reject_ratio": 5}, "max_reject_ratio must be a share between 0 and 1"),
        ({"source": "s3", "bucket": "b"}, "key must be the raw file.s S3 key"),
    ]
    for kwargs, message in cases:
        operator = MigrateUserPropertiesOperator(task_id="t", **kwargs)
        with pytest.raises(AirflowFailException, match=message):
            operator.execute({})


def test_operator_returns_the_result_and_fails_past_the_reject_ratio(
    airflow_db, dwh_dsn, dwh_conn_env
):
    from airflow.sdk.exceptions import AirflowFailException

    from dwh_helper.operators.user_properties import MigrateUserPropertiesOperator

    with open_connection(dwh_dsn) as conn:
        Repository(conn).copy_rows(
            TMP_USER_PROPERTIES,
            [
                (
                    "00000000-0000-0000-0000-000000000001",
                    {"EHR_ID": "1", "Ehr Count": 2},
                    "ru",
                    5,
                    "1",
                    HOUR,
                    False,
                ),
                (
                    "00000000-0000-0000-0000-000000000002",
                    {"EHR_ID": "x", "age": "x"},
                    "ru",
                    5,
                    "1",
                    HOUR,
                    False,
                ),
            ],
        )
    operator = MigrateUserPropertiesOperator(task_id="t", max_reject_ratio=0.6, batch_size="10")
    result = operator.execute({})
    assert (result["processed"], result["rejected"], result["status"]) == (1, 1, "completed")
    assert result["unknown_keys"] == {"Ehr Count": 1}
    json.dumps(result)
    with open_connection(dwh_dsn) as conn:
        conn.execute("UPDATE tmp_user_properties SET migrated = false")
        conn.execute("DELETE FROM load_rejects")
    strict = MigrateUserPropertiesOperator(task_id="t", max_reject_ratio=0.1, strict="True")
    with pytest.raises(AirflowFailException, match="2 records were rejected for the first time"):
        strict.execute({})


@pytest.mark.s3
def test_operator_reads_a_raw_file_from_s3(airflow_db, dwh_dsn, dwh_conn_env, aws_conn_env, store):
    from dwh_helper.operators.user_properties import MigrateUserPropertiesOperator

    events = generate_hour(374182, HOUR, seed=9, count=30)
    body = b"".join(json.dumps(event).encode() + b"\n" for event in events)
    key = "raw/amplitude/web/2024/03/02/part.ndjson"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    operator = MigrateUserPropertiesOperator(
        task_id="t",
        source="s3",
        key=key,
        bucket=store.bucket,
        start_after="10",
        batch_size="7",
        max_reject_ratio=1.0,
    )
    result = operator.execute({})
    assert (result["key"], result["start_after"], result["last_line"]) == (key, 10, 30)
    assert result["processed"] + result["rejected"] == 20
    with open_connection(dwh_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM changeable_user_properties").fetchone()[0] > 0
