"""Issue 12 through Airflow: the `user_properties` DAG (dag.test(), as `airflow dags test` runs
it) over pending rows with the dirty values `tmp_user_properties` can hold ends `success`,
with each value nulled and reported or each record rejected as documented, at the default
reject ratio. (NUL, the refused timestamp forms and 5,000-deep JSON cannot reach the table:
the Amplitude loader repairs or refuses them first — tests/dags/test_dirty_records_dag.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.tables import TMP_USER_PROPERTIES
from tests.dags.test_user_properties_dag import _dag, dwh_conn_env  # noqa: F401 - fixture
from tests.user_properties_dirty import SECRET_VALUES, check_good_records, good_event, record_id

pytestmark = [pytest.mark.airflow, pytest.mark.db]

GOOD = 450  # 4 rejected of 456 stays under the default 1% reject ratio
EHR_CASES = ("84141a73-5ed4-4a0c-9c1d-4c2f6f5b2b11", "someone@example.com", " 12", "５０９０７１")


def _row(event: dict, props_text: str | None = None) -> tuple:
    return (
        event["uuid"],
        props_text or json.dumps(event["user_properties"], ensure_ascii=False),
        event["language"],
        event["session_id"],
        event["start_version"],
        event["event_time"],
        False,
    )


def test_dirty_pending_rows_through_the_dag_end_success(
    airflow_db,
    dwh_dsn,
    dwh_conn_env,  # noqa: F811 - the fixture imported above
    caplog,
):
    good = [good_event(n) for n in range(1, GOOD + 1)]
    rows = [_row(event) for event in good]
    dirty: dict[str, tuple[str, str | None]] = {}  # uuid -> (kind, column)
    for n, ehr in enumerate(EHR_CASES, start=20_001):
        event = good_event(n)
        event["user_properties"]["EHR_ID"] = ehr
        rows.append(_row(event))
        dirty[record_id(n)] = ("record", "ehr_id")
    event = good_event(20_010)
    event["user_properties"].update(EHR_ID="7001", age="５０")
    rows.append(_row(event))
    dirty[record_id(20_010)] = ("value", "age")
    event = good_event(20_011)
    event["user_properties"].update(EHR_ID="7002", cohort_day=1)
    text = json.dumps(event["user_properties"])
    rows.append(_row(event, text.replace('"cohort_day": 1}', '"cohort_day": 1e400}')))
    dirty[record_id(20_011)] = ("value", "cohort_day")
    with open_connection(dwh_dsn) as conn:
        Repository(conn).copy_rows(TMP_USER_PROPERTIES, rows)

    run = _dag().test(
        logical_date=datetime(2024, 3, 3, tzinfo=UTC),
        run_conf={"since": "2024-03-02", "until": "2024-03-02", "batch_size": 100},
    )
    assert run.state == "success"
    with open_connection(dwh_dsn) as conn:
        check_good_records(conn, good)
        reports = conn.execute(
            "SELECT record_id, kind, column_name, reason FROM load_rejects "
            "WHERE source = 'user_properties'"
        ).fetchall()
        assert {row[0]: (row[1], row[2]) for row in reports} == dirty
        assert len(reports) == len(dirty)
        pending = conn.execute(
            "SELECT uuid::text FROM tmp_user_properties WHERE NOT migrated ORDER BY 1"
        ).fetchall()
        assert [row[0] for row in pending] == sorted(
            uuid for uuid, (kind, _column) in dirty.items() if kind == "record"
        )
        nulled = conn.execute(
            "SELECT p.ehr_id, c.age, p.cohort_day FROM changeable_user_properties c "
            "JOIN permanent_user_properties p USING (ehr_id) WHERE p.ehr_id IN (7001, 7002) "
            "ORDER BY 1"
        ).fetchall()
        assert nulled == [(7001, None, 20_010 % 7), (7002, 20 + 20_011, None)]
    for secret in SECRET_VALUES:
        assert secret not in caplog.text
