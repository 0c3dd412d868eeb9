"""amplitude_events then user_properties with dag.test(): sandbox events become user properties."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from devtools.sandbox.amplitude import AmplitudeSandbox
from dwh_helper.dwh.repository import open_connection
from dwh_helper.sources.amplitude import ExportWindow
from dwh_helper.transform.user_properties import transform_record
from tests.support.airflow_connections import use_amplitude_sandbox

pytestmark = [pytest.mark.airflow, pytest.mark.db, pytest.mark.s3]

DAY = date(2024, 3, 2)


def test_chain_on_sandbox_data(airflow_env, monkeypatch):
    from airflow.models import DagBag

    monkeypatch.setenv("ETL_REJECT_RATIO", "0.2")  # the sandbox makes ~1% bad values on purpose
    with AmplitudeSandbox(seed=21, events_per_hour=10) as sandbox:
        use_amplitude_sandbox(monkeypatch, sandbox)
        bag = DagBag()
        logical = datetime(2024, 3, 3, 3, tzinfo=UTC)
        run = bag.get_dag("amplitude_events").test(
            run_conf={"start": DAY.isoformat()}, logical_date=logical
        )
        assert str(run.state) == "success"
        run = bag.get_dag("user_properties").test(logical_date=logical)
        assert str(run.state) == "success"
        events = [
            event
            for project in sandbox.projects
            for event in sandbox.events(project.name, ExportWindow.for_day(DAY))
        ]

    results = [transform_record(event) for event in events]
    pairs = list(zip(events, results, strict=True))
    # a bad key value rejects the record; any other bad value is stored NULL and reported
    rejected = {event["uuid"] for event, result in pairs if result.errors}
    reported = {event["uuid"] for event, result in pairs if result.reports and not result.errors}
    people = {
        result.permanent["ehr_id"]
        for result in results
        if result.permanent is not None and not result.errors
    }
    assert reported and people, "the sandbox makes ~1% bad values on purpose"
    with open_connection(airflow_env) as conn:
        pending = {
            str(row[0])
            for row in conn.execute("SELECT uuid FROM tmp_user_properties WHERE NOT migrated")
        }
        assert pending == rejected, "exactly the rejected records stay pending"

        def journal(kind: str) -> set[str]:
            return {
                row[0]
                for row in conn.execute(
                    "SELECT record_id FROM load_rejects WHERE source = 'user_properties' "
                    "AND kind = %s",
                    (kind,),
                )
            }

        assert journal("record") == rejected
        assert journal("value") == reported
        permanent = {row[0] for row in conn.execute("SELECT ehr_id FROM permanent_user_properties")}
        assert permanent == people
        assert conn.execute("SELECT count(*) FROM changeable_user_properties").fetchone()[0] > 0
