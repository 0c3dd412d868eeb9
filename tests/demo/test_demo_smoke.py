"""The demo's pipeline on one small day: its summary numbers equal the sandbox's truth."""

from __future__ import annotations

from datetime import date

import pytest

from devtools.demo import demo_days, local_stack, run_dag, s3_summary, table_counts
from dwh_helper.sources.amplitude import ExportWindow

pytestmark = [pytest.mark.airflow, pytest.mark.db, pytest.mark.s3]


def test_demo_days_are_complete_in_amplitude():
    from datetime import UTC, datetime

    assert demo_days(datetime(2026, 11, 27, 1, 0, tzinfo=UTC)) == (
        date(2026, 11, 24),
        date(2026, 11, 25),
    )
    assert demo_days(datetime(2026, 11, 27, 2, 30, tzinfo=UTC)) == (
        date(2026, 11, 25),
        date(2026, 11, 26),
    )


def test_one_small_day_through_airflow_matches_the_sandbox(tmp_path):
    day = demo_days()[1]
    with local_stack(tmp_path, events_per_hour=5) as stack:
        from devtools.demo import airflow

        airflow(stack, "db", "migrate")
        run_dag(stack, "amplitude_events", day, {"start": day.isoformat()})
        counts = table_counts(stack.dwh_dsn)
        window = ExportWindow.for_day(day)
        events = [
            event
            for project in stack.amplitude.projects
            for event in stack.amplitude.events(project.name, window)
        ]
        devices = {event["device_id"] for event in events if event.get("device_id")}
        assert counts["events_part"] == counts["user_locations"] == len(events) > 0
        assert counts["mobile_devices"] == len(devices)
        assert counts["load_log"] == 2
        summary = s3_summary(stack)
        assert summary.keys() == {"raw/amplitude/mobile/", "raw/amplitude/web/"}
        assert all(objects == 1 for objects, _ in summary.values())
        assert stack.dag_seconds["amplitude_events"] > 0
