"""dag.test() of amplitude_events: sandbox Amplitude → moto S3 → real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from ipaddress import ip_address

import psycopg
import pytest

from devtools.sandbox.amplitude import AmplitudeSandbox
from dwh_helper.dwh.repository import open_connection
from dwh_helper.pipeline.amplitude import archive_key
from dwh_helper.sources.amplitude import ExportWindow

pytestmark = [pytest.mark.airflow, pytest.mark.db, pytest.mark.s3]

DAYS = (date(2024, 3, 1), date(2024, 3, 2))
TABLES = (
    "events_part",
    "technical_data",
    "tmp_event_properties",
    "tmp_user_properties",
    "user_locations",
)


@pytest.fixture
def sandbox():
    with AmplitudeSandbox(seed=11, events_per_hour=12) as server:
        yield server


@pytest.fixture
def amplitude_env(sandbox: AmplitudeSandbox, airflow_env: str, monkeypatch) -> str:
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
    return airflow_env


def _run(conf: dict, run: int) -> str:
    """One dag.test() run; each gets its own logical date (run ids must differ)."""
    from airflow.models import DagBag

    dag = DagBag().get_dag("amplitude_events")
    logical_date = datetime(2024, 3, 3 + run, 3, tzinfo=UTC)
    return str(dag.test(run_conf=conf, logical_date=logical_date).state)


def _asset_events() -> int:
    """How many times the `dwh://public/amplitude_events` asset was updated so far."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(
            select(func.count(AssetEvent.id))
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == "dwh://public/amplitude_events")
        )


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = (*TABLES, "mobile_devices", "load_rejects")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def _truth(sandbox: AmplitudeSandbox) -> tuple[list[dict], set[str]]:
    events = [
        event
        for project in sandbox.projects
        for day in DAYS
        for event in sandbox.events(project.name, ExportWindow.for_day(day))
    ]
    devices = {event["device_id"] for event in events if event.get("device_id")}
    return events, devices


def test_two_days_two_sources_end_to_end(sandbox, amplitude_env, s3_server, bucket):
    conf = {"start": DAYS[0].isoformat(), "end": DAYS[1].isoformat()}
    events_before = _asset_events()
    assert _run(conf, 0) == "success"
    # Four mapped loads (2 sources x 2 days), one asset event: after all of them.
    assert _asset_events() == events_before + 1

    # raw archives in S3, byte for byte as served
    client = s3_server.client()
    for project in sandbox.projects:
        for day in DAYS:
            window = ExportWindow.for_day(day)
            body = client.get_object(Bucket=bucket, Key=archive_key(project.name, window))
            assert body["Body"].read() == sandbox.archive_bytes(project.name, window)

    events, devices = _truth(sandbox)
    assert len(events) > 500
    with open_connection(amplitude_env) as conn:
        counts = _counts(conn)
        assert counts == {
            **{table: len(events) for table in TABLES},
            "mobile_devices": len(devices),
            "load_rejects": 0,
        }
        by_uuid = {event["uuid"]: event for event in events}

        # spot checks: timestamps, $insert_id, inet, jsonb with Cyrillic, null rules
        rows = conn.execute(
            "SELECT e.uuid::text, e.event_time, e.user_id, e.session_id, e.device_id, "
            "t.insert_id, l.ip_address, p.user_properties_json, l.city "
            "FROM events_part e JOIN technical_data t USING (uuid) "
            "JOIN user_locations l USING (uuid) JOIN tmp_user_properties p USING (uuid)"
        ).fetchall()
        seen_null_user = seen_null_session = seen_v6 = seen_cyrillic = False
        for uuid, event_time, user_id, session_id, device_id, insert_id, ip, props, city in rows:
            event = by_uuid[uuid]
            assert event_time == datetime.fromisoformat(event["event_time"])
            assert insert_id == event["$insert_id"]
            assert props == event["user_properties"]
            assert device_id == (event["device_id"] or None)
            raw_user = event["user_id"]
            if raw_user in (None, "", "N/A", "-1"):
                assert user_id is None
                seen_null_user = True
            else:
                assert user_id == int(raw_user)
            if event["session_id"] == -1:
                assert session_id is None
                seen_null_session = True
            else:
                assert session_id == event["session_id"]
            if event["ip_address"]:
                assert ip_address(str(ip)) == ip_address(event["ip_address"])
                seen_v6 |= ip_address(event["ip_address"]).version == 6
            seen_cyrillic |= any("\u0400" <= ch <= "\u04ff" for ch in (city or ""))
        assert seen_null_user and seen_null_session and seen_v6 and seen_cyrillic
        log = conn.execute("SELECT status, count(*) FROM load_log GROUP BY 1").fetchall()
        assert log == [("loaded", 4)]

    # a second, identical run changes no count
    assert _run(conf, 1) == "success"
    with open_connection(amplitude_env) as conn:
        assert _counts(conn) == counts

    # a re-load from S3 makes no call to Amplitude and changes nothing
    calls = sandbox.export_calls
    assert _run({**conf, "reload_from_s3": True, "sources": ["web"]}, 2) == "success"
    assert sandbox.export_calls == calls
    with open_connection(amplitude_env) as conn:
        assert _counts(conn) == counts
        assert conn.execute("SELECT count(*) FROM load_log").fetchone()[0] == 4 + 4 + 2
