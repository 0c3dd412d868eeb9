"""dag.test() of appmetrica_events: sandbox AppMetrica → moto S3 → real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import psycopg
import pytest

from devtools.sandbox.appmetrica import AppMetricaFaults, AppMetricaSandbox
from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS
from dwh_helper.dwh.repository import open_connection
from dwh_helper.pipeline.appmetrica import day_window, raw_key
from dwh_helper.sources.appmetrica import ExportRequest

pytestmark = [pytest.mark.airflow, pytest.mark.db, pytest.mark.s3]

DAYS = (date(2024, 3, 1), date(2024, 3, 2))
APPLICATION = "1111"
TOKEN = "dag-test-token"


@pytest.fixture
def sandbox():
    faults = AppMetricaFaults(ready_after=1)
    with AppMetricaSandbox(TOKEN, (APPLICATION,), seed=5, events_per_day=150, faults=faults) as s:
        yield s


@pytest.fixture
def appmetrica_env(sandbox: AppMetricaSandbox, airflow_env: str, monkeypatch) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_APPMETRICA_DEFAULT",
        json.dumps(
            {
                "conn_type": "appmetrica",
                "host": sandbox.url,
                "password": TOKEN,
                "extra": {"application_ids": APPLICATION, "poll_interval": 0.01},
            }
        ),
    )
    return airflow_env


def _run(conf: dict, run: int) -> str:
    """One dag.test() run; each gets its own logical date (run ids must differ)."""
    from airflow.models import DagBag

    dag = DagBag().get_dag("appmetrica_events")
    logical_date = datetime(2024, 3, 3 + run, 4, tzinfo=UTC)
    return str(dag.test(run_conf=conf, logical_date=logical_date).state)


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = ("appmetrica.events", "load_rejects", "load_log")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_dag_imports_with_params_pool_and_mapping():
    from airflow.models import DagBag

    bag = DagBag()
    assert bag.import_errors == {}
    dag = bag.dags["appmetrica_events"]
    assert set(dag.params.keys()) == {
        "start",
        "end",
        "application_ids",
        "resources",
        "fields",
        "date_dimension",
        "reload_from_s3",
    }
    assert [t.task_id for t in dag.topological_sort()] == [
        "migrate_schema",
        "plan",
        "extract",
        "load",
        "publish",
    ]
    extract = dag.get_task("extract")
    assert extract.pool == "default_pool" and extract.max_active_tis_per_dag == 3
    assert extract.retries >= 2 and extract.retry_exponential_backoff
    assert "task.application_id" in extract.map_index_template
    assert dag.get_task("load").outlets == []
    assert [asset.uri for asset in dag.get_task("publish").outlets] == ["dwh://appmetrica/events"]


def test_two_days_end_to_end_then_idempotent(sandbox, appmetrica_env, s3_server, bucket):
    conf = {"start": DAYS[0].isoformat(), "end": DAYS[1].isoformat()}
    assert _run(conf, 0) == "success"

    # raw files in S3, byte for byte as the sandbox served them
    client = s3_server.client()
    truth: list[dict[str, str]] = []
    for day in DAYS:
        since, until = day_window(day)
        request = ExportRequest(
            "events", APPLICATION, since, until, fields=DEFAULT_FIELDS["events"], fmt="csv"
        )
        stored = client.get_object(Bucket=bucket, Key=raw_key(APPLICATION, "events", day))
        assert stored["Body"].read() == sandbox.body_bytes(request)
        assert stored["Metadata"]["application-id"] == APPLICATION
        truth += sandbox.rows("events", APPLICATION, since, until)
    assert len(truth) == 2 * 150

    with open_connection(appmetrica_env) as conn:
        counts = _counts(conn)
        assert counts == {"appmetrica.events": len(truth), "load_rejects": 0, "load_log": 2}
        rows = conn.execute(
            "SELECT application_id, event_timestamp, event_datetime, session_id, "
            "appmetrica_device_id, event_json, city, ios_ifa, event_name "
            "FROM appmetrica.events"
        ).fetchall()
        by_key = {(r[1], r[4], r[3], r[8]): r for r in rows}
        seen_json = seen_cyrillic = seen_null_ifa = False
        for raw in truth:
            key = (
                datetime.fromtimestamp(int(raw["event_timestamp"]), UTC),
                int(raw["appmetrica_device_id"]),
                int(raw["session_id"]),
                raw["event_name"],
            )
            row = by_key[key]
            assert row[0] == int(APPLICATION)
            assert row[2] == datetime.fromisoformat(raw["event_datetime"])
            if raw["event_json"]:
                assert row[5] == json.loads(raw["event_json"])
                seen_json |= isinstance(row[5], dict) and bool(row[5])
            else:
                assert row[5] is None
            assert row[6] == (raw["city"] or None)
            seen_cyrillic |= any("\u0400" <= ch <= "\u04ff" for ch in raw["city"])
            seen_null_ifa |= row[7] is None
        assert seen_json and seen_cyrillic and seen_null_ifa
        assert conn.execute("SELECT count(DISTINCT row_uuid) FROM appmetrica.events").fetchone()[
            0
        ] == len(truth)
        assert {r[0] for r in conn.execute("SELECT status FROM load_log")} == {"loaded"}

    # a second, identical run changes no count (the export is overwritten, the load inserts 0)
    assert _run(conf, 1) == "success"
    with open_connection(appmetrica_env) as conn:
        again = _counts(conn)
        assert again == {**counts, "load_log": 4}
        inserted = conn.execute(
            "SELECT rows_inserted FROM load_log ORDER BY id DESC LIMIT 2"
        ).fetchall()
        assert [row[0] for row in inserted] == [{"events": 0}, {"events": 0}]

    # re-load from S3: no AppMetrica call, nothing changes
    calls = sandbox.export_calls
    assert _run({**conf, "reload_from_s3": True}, 2) == "success"
    assert sandbox.export_calls == calls
    with open_connection(appmetrica_env) as conn:
        assert _counts(conn) == {**counts, "load_log": 6}


# -- the hook ----------------------------------------------------------------------------------


def _set_connection(monkeypatch, **fields) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_APPMETRICA_DEFAULT", json.dumps({"conn_type": "appmetrica", **fields})
    )


def test_hook_reads_the_connection_fields_by_name(monkeypatch):
    from dwh_helper.hooks.appmetrica import AppMetricaHook

    _set_connection(
        monkeypatch,
        host="api.example.ru",
        port=8443,
        password="secret-token",
        extra={"application_ids": "1111, 2222", "poll_interval": "0.5", "region": "ignored"},
    )
    hook = AppMetricaHook()
    assert hook.base_url == "https://api.example.ru:8443"
    assert hook.application_ids == ["1111", "2222"]
    with hook.get_client(max_attempts=2) as client:
        assert client.base_url == "https://api.example.ru:8443"
        assert (client.poll_interval, client.poll_timeout, client.max_attempts) == (0.5, 1800, 2)
        assert client._http.headers["Authorization"] == "OAuth secret-token"


def test_hook_default_base_url_and_full_url_host(monkeypatch):
    from dwh_helper.hooks.appmetrica import AppMetricaHook

    _set_connection(monkeypatch, password="t")
    assert AppMetricaHook().base_url == "https://api.appmetrica.yandex.ru"
    assert AppMetricaHook().application_ids == []
    _set_connection(monkeypatch, host="http://127.0.0.1:8082/", password="t")
    assert AppMetricaHook().base_url == "http://127.0.0.1:8082"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            None,
            "'appmetrica_default' is not defined: create it with "
            "`airflow connections add appmetrica_default --conn-json",
        ),
        ({"host": "http://x"}, "has no password (the AppMetrica OAuth token)"),
        ({"password": "t", "extra": {"poll_timeout": "soon"}}, "extra 'poll_timeout' must be"),
        (
            {"password": "t", "extra": {"poll_interval": 0}},
            "extra 'poll_interval' must be positive",
        ),
        ({"password": "t", "extra": {"application_ids": "1111,app"}}, "got ['app']"),
    ],
)
def test_hook_errors_say_what_to_set(monkeypatch, fields, message):
    from dwh_helper.hooks.appmetrica import AppMetricaHook
    from dwh_helper.hooks.connection_fields import ConnectionMissing

    monkeypatch.delenv("AIRFLOW_CONN_APPMETRICA_DEFAULT", raising=False)
    if fields is not None:
        _set_connection(monkeypatch, **fields)
    with pytest.raises(ConnectionMissing) as error:
        hook = AppMetricaHook()
        hook.application_ids  # noqa: B018 - reads the extra
        hook.get_client()
    assert message in str(error.value)
