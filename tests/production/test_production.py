"""Under the production topology, the DWH ends up exactly as the sequential `dags test` leaves it.

The stack (tests/production/stack.py) is Airflow's api-server, scheduler, dag-processor,
triggerer and two Celery workers (`--concurrency 2`) on a Redis-protocol broker, with the
metadata DB on the test PostgreSQL; the sandboxes and moto stand in for Amplitude,
AppMetrica and S3. Both loading DAGs are triggered for two days (the later day first, so
user properties arrive out of order), `user_properties` starts from the asset, and every DWH
table is compared row for row with in-process `dag.test()` runs of the same days, one after
the other. The second scenario kills a `load` task's process (`kill -9`) mid-load, then
deletes rows of the recovered DWH and re-runs both DAGs with `reload_from_s3`, two runs of the
same day at once: the re-loads (the key-lookup path of ADR 0002) put back exactly what was
deleted.

Run alone with `pytest -m production`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.production.conftest import (
    BUCKET,
    DWH_DB,
    REJECT_RATIO,
    reset_database,
    source_connections,
)
from tests.production.stack import AirflowStack
from tests.support.airflow_connections import postgres_connection

pytestmark = [
    pytest.mark.production,
    pytest.mark.airflow,
    pytest.mark.db,
    pytest.mark.s3,
    pytest.mark.timeout(900),
]

DAYS = (date(2024, 3, 1), date(2024, 3, 2))
LOADING_DAGS = ("amplitude_events", "appmetrica_events")
# Columns filled by the database or the clock (ids, timestamps of a load, process ids):
# they differ between any two runs and are left out of the comparison.
VOLATILE_DEFAULTS = ("nextval(", "now()", "clock_timestamp(", "gen_random_uuid(")
VOLATILE_NAMES = {"duration_seconds", "backend_pid", "started_at", "finished_at", "loaded_at"}
# One row per load attempt: the killed attempt is a row the sequential run never has.
NOT_COMPARED = {"load_log", "schema_migrations"}
KEY_DAY = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/")


def dwh_tables(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Every table the pipelines write (partitions through their parent) and its stable columns."""
    rows = conn.execute(
        "SELECT c.table_schema, c.table_name, c.column_name, coalesce(c.column_default, '') "
        "FROM information_schema.columns AS c "
        "JOIN pg_class AS k ON k.relname = c.table_name "
        "JOIN pg_namespace AS n ON n.oid = k.relnamespace AND n.nspname = c.table_schema "
        "WHERE c.table_schema IN ('public', 'appmetrica') AND k.relkind IN ('r', 'p') "
        "AND NOT k.relispartition ORDER BY 1, 2, c.ordinal_position"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for schema, table, column, default in rows:
        if table in NOT_COMPARED:
            continue
        columns = tables.setdefault(f"{schema}.{table}", [])
        if column in VOLATILE_NAMES or any(mark in default for mark in VOLATILE_DEFAULTS):
            continue
        columns.append(column)
    return tables


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Every compared table's rows, sorted."""
    with psycopg.connect(dsn) as conn:
        result = {}
        for table, columns in dwh_tables(conn).items():
            listed = ", ".join(f'"{column}"' for column in columns)
            order = ", ".join(str(position) for position in range(1, len(columns) + 1))
            rows = conn.execute(f"SELECT {listed} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608
            result[table] = rows
        return result


def loaded_days(dsn: str) -> dict[str, set[date]]:
    """The days each loading DAG landed, from the S3 keys in load_log."""
    days: dict[str, set[date]] = {"amplitude_events": set(), "appmetrica_events": set()}
    with psycopg.connect(dsn) as conn:
        for (key,) in conn.execute("SELECT DISTINCT s3_key FROM load_log").fetchall():
            match = KEY_DAY.search(key)
            assert match, key
            day = date(*map(int, match.groups()))
            dag_id = "amplitude_events" if "/amplitude/" in key else "appmetrica_events"
            days[dag_id].add(day)
    return days


def trigger(stack: AirflowStack, *runs: tuple[str, str, dict[str, Any]]) -> None:
    """`airflow dags trigger` (the CLI, as an operator would) for each (dag_id, run_id, conf),
    all at once."""
    stack.airflow_all(
        *(
            ("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
            for dag_id, run_id, conf in runs
        )
    )


def run_states(stack: AirflowStack) -> list[tuple[str, str, str]]:
    """(dag_id, run_id, state) of every DAG run."""
    return stack.query("SELECT dag_id, run_id, state FROM dag_run ORDER BY id")


@pytest.fixture(scope="module")
def references() -> dict[tuple, dict[str, list[tuple]]]:
    """Reference tables already computed in this module, by their days (see `reference`)."""
    return {}


def reference(
    pg_server, s3_server, sandboxes, monkeypatch, days: dict[str, set[date]], known: dict
) -> dict[str, list[tuple]]:
    """The tables after sequential in-process `dag.test()` runs of the same days.

    The sandboxes are deterministic, so the same days give the same tables: a reference
    is computed once per set of days and kept in `known` for the other scenario.
    """
    key = tuple(sorted((dag_id, tuple(sorted(dates))) for dag_id, dates in days.items()))
    if key not in known:
        known[key] = sequential_tables(pg_server, s3_server, sandboxes, monkeypatch, days)
    return known[key]


def sequential_tables(
    pg_server, s3_server, sandboxes, monkeypatch, days: dict[str, set[date]]
) -> dict[str, list[tuple]]:
    """Run the DAGs one after the other with `dag.test()` into a new database; its tables."""
    from airflow.models import DagBag

    dsn = pg_server.dsn_for(pg_server.create_database())
    bucket = f"reference-{os.getpid()}-{time.monotonic_ns()}"
    s3_server.create_bucket(bucket)
    monkeypatch.setenv("AIRFLOW_CONN_DWH_POSTGRES", postgres_connection(dsn))
    monkeypatch.setenv("S3_BUCKET_NAME", bucket)
    monkeypatch.setenv("ETL_REJECT_RATIO", REJECT_RATIO)
    for name, value in source_connections(*sandboxes).items():
        monkeypatch.setenv(name, value)
    dags = DagBag().dags
    logical = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=time.time_ns() % 10_000)
    for dag_id in LOADING_DAGS:
        for day in sorted(days[dag_id]):
            logical += timedelta(hours=1)
            run = dags[dag_id].test(run_conf={"start": day.isoformat()}, logical_date=logical)
            assert str(run.state) == "success", (dag_id, day)
    logical += timedelta(hours=1)
    assert str(dags["user_properties"].test(logical_date=logical).state) == "success"
    try:
        return snapshot(dsn)
    finally:
        pg_server.drop_database(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def assert_same_tables(actual: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> None:
    """Row-for-row equality, table by table, with a readable difference."""
    assert actual.keys() == expected.keys()
    for table in expected:
        if actual[table] == expected[table]:
            continue
        missing = set(map(repr, expected[table])) - set(map(repr, actual[table]))
        extra = set(map(repr, actual[table])) - set(map(repr, expected[table]))
        raise AssertionError(
            f"{table}: {len(actual[table])} rows vs {len(expected[table])} sequential; "
            f"{len(missing)} missing, e.g. {sorted(missing)[:2]}; "
            f"{len(extra)} extra, e.g. {sorted(extra)[:2]}"
        )
    assert sum(len(rows) for rows in expected.values()) > 0


def fresh_dwh(stack: AirflowStack, pg_server, s3_server) -> str:
    """An empty DWH database and bucket for a scenario (the stack must be idle)."""
    stack.wait_until_idle(timeout=300, settle=1)
    client = s3_server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return reset_database(pg_server, DWH_DB)


def trigger_two_days(stack: AirflowStack, tag: str, *, later_first: bool = False) -> None:
    """Both loading DAGs for both days: AppMetrica in one run, Amplitude one run per day,
    the later day first (`later_first`: the earlier one only after user_properties ran)."""
    later, earlier = DAYS[1].isoformat(), DAYS[0].isoformat()
    runs = [
        ("amplitude_events", f"{tag}-amplitude-later", {"start": later}),
        ("appmetrica_events", f"{tag}-appmetrica", {"start": earlier, "end": later}),
    ]
    earlier_run = ("amplitude_events", f"{tag}-amplitude-earlier", {"start": earlier})
    if later_first:
        trigger(stack, *runs)
        stack.wait_until_idle(timeout=600)
        trigger(stack, earlier_run)
    else:
        trigger(stack, *runs, earlier_run)


def user_properties_results(stack: AirflowStack) -> list[dict[str, Any]]:
    """The XCom results of every user_properties run so far."""
    rows = stack.query(
        "SELECT value FROM xcom WHERE dag_id = 'user_properties' "
        "AND task_id = 'migrate_user_properties' AND key = 'return_value'"
    )
    return [value if isinstance(value, dict) else json.loads(value) for (value,) in rows]


def test_parallel_celery_runs_equal_the_sequential_dags_test(
    stack, pg_server, s3_server, sandboxes, airflow_db, aws_conn_env, monkeypatch, references
):
    dwh_dsn = fresh_dwh(stack, pg_server, s3_server)
    trigger_two_days(stack, "clean", later_first=True)
    stack.wait_until_idle(timeout=600)

    runs = run_states(stack)
    assert all(state == "success" for _, _, state in runs), runs
    assert {dag_id for dag_id, _, _ in runs} == {*LOADING_DAGS, "user_properties"}
    for worker in ("worker1", "worker2"):
        assert "Executing workload in Celery" in stack.log_tail(worker, 10**7), worker
    days = loaded_days(dwh_dsn)
    assert set(DAYS) <= days["amplitude_events"] and set(DAYS) <= days["appmetrica_events"]
    # The earlier day arrived after user_properties had run on the later one.
    assert any(result["rederived_people"] > 0 for result in user_properties_results(stack))

    actual = snapshot(dwh_dsn)
    expected = reference(pg_server, s3_server, sandboxes, monkeypatch, days, references)
    assert_same_tables(actual, expected)


def kill_a_running_load(
    stack: AirflowStack, run_prefix: str, dwh_dsn: str, timeout: float
) -> tuple[str, int]:
    """`kill -9` a `load` task process of the scenario's runs while it holds a DWH transaction
    (or, failing that, once it has run for 5 s); returns its (run_id, map_index)."""
    deadline = time.monotonic() + timeout
    first_seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        stack.check_alive()
        running = stack.query(
            "SELECT run_id, map_index, pid FROM task_instance WHERE task_id = 'load' "
            "AND state = 'running' AND pid IS NOT NULL AND run_id LIKE %s",
            f"{run_prefix}%",
        )
        with psycopg.connect(dwh_dsn, autocommit=True) as conn:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            ).fetchone()[0]
        now = time.monotonic()
        for run_id, map_index, pid in running:
            first_seen.setdefault(f"{run_id}/{map_index}", now)
            if busy or now - first_seen[f"{run_id}/{map_index}"] > 5:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it finished meanwhile: take the next one
                    continue
                return run_id, map_index
        time.sleep(0.05)
    raise TimeoutError(f"no running load task after {timeout:.0f}s: {run_states(stack)}")


def test_a_killed_load_recovers_and_a_reload_puts_back_deleted_rows(
    stack, pg_server, s3_server, sandboxes, airflow_db, aws_conn_env, monkeypatch, references
):
    dwh_dsn = fresh_dwh(stack, pg_server, s3_server)
    trigger_two_days(stack, "killed")
    killed = kill_a_running_load(stack, "killed-", dwh_dsn, timeout=300)
    stack.wait_until_idle(timeout=600)

    # Each try is a new task instance id in Airflow 3: find the task by run and map index.
    state, tries = stack.query(
        "SELECT state, try_number FROM task_instance WHERE task_id = 'load' "
        "AND run_id = %s AND map_index = %s",
        *killed,
    )[0]
    assert (state, tries > 1) == ("success", True), "the killed load was not retried"
    runs = [run for run in run_states(stack) if not run[1].startswith("clean-")]
    assert all(state == "success" for _, _, state in runs), runs

    days = loaded_days(dwh_dsn)
    expected = reference(pg_server, s3_server, sandboxes, monkeypatch, days, references)
    assert_same_tables(snapshot(dwh_dsn), expected)

    # Then the operator's re-load after an incident: rows deleted by hand come back, once.
    # (In this scenario, not one of its own, to spare the suite a third two-day load.)
    reload_puts_back_what_was_deleted(stack, dwh_dsn, "killed-reload")
    assert_same_tables(snapshot(dwh_dsn), expected)


# What the re-load check deletes before re-loading: (table, its key, rows_inserted's name).
DELETED = (
    ("public.events_part", "uuid, event_time", "events_part"),
    ("public.technical_data", "uuid", "technical_data"),
    ("appmetrica.events", "row_uuid", "events"),
)


def delete_some_rows(dsn: str, count: int) -> dict[str, int]:
    """Delete `count` rows of each DELETED table (the lowest keys); rows deleted, by name."""
    deleted = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, key, name in DELETED:
            rows = conn.execute(
                f"DELETE FROM {table} WHERE ({key}) IN "  # noqa: S608 - names from DELETED
                f"(SELECT {key} FROM {table} ORDER BY {key} LIMIT %s)",
                (count,),
            ).rowcount
            deleted[name] = rows
    return deleted


def reload_puts_back_what_was_deleted(stack: AirflowStack, dwh_dsn: str, tag: str) -> None:
    """Delete rows of the loaded DWH, trigger both DAGs' `reload_from_s3` runs at once (the
    later Amplitude day twice) and check that together they insert exactly the deleted rows."""
    runs_before = len(run_states(stack))
    with psycopg.connect(dwh_dsn) as conn:
        (last_load,) = conn.execute("SELECT max(id) FROM load_log").fetchone()
    deleted = delete_some_rows(dwh_dsn, 40)
    assert all(rows == 40 for rows in deleted.values()), deleted

    earlier, later = DAYS[0].isoformat(), DAYS[1].isoformat()
    reload = {"reload_from_s3": True}
    trigger(
        stack,
        ("amplitude_events", f"{tag}-amplitude-both", {"start": earlier, "end": later, **reload}),
        ("amplitude_events", f"{tag}-amplitude-again", {"start": later, **reload}),
        ("appmetrica_events", f"{tag}-appmetrica-both", {"start": earlier, "end": later, **reload}),
    )
    stack.wait_until_idle(timeout=600)

    runs = run_states(stack)[runs_before:]  # the re-load runs, user_properties' included
    assert all(state == "success" for _, _, state in runs), runs
    with psycopg.connect(dwh_dsn) as conn:
        reloads = conn.execute(
            "SELECT s3_key, status, rows_inserted FROM load_log WHERE id > %s", (last_load,)
        ).fetchall()
        first_loaded = conn.execute(
            "SELECT DISTINCT s3_key FROM load_log WHERE id <= %s AND status = 'loaded'",
            (last_load,),
        ).fetchall()
    # every file of both days had a new attempt (read again, or found just loaded by the
    # twin run of the same day), and together they inserted exactly the deleted rows
    assert {key for key, _, _ in reloads} == {key for (key,) in first_loaded}
    assert all(status in ("loaded", "already loaded") for _, status, _ in reloads), reloads
    inserted: dict[str, int] = {}
    for _, _, counts in reloads:
        for table, rows in counts.items():
            inserted[table] = inserted.get(table, 0) + rows
    assert {table: rows for table, rows in inserted.items() if rows} == deleted
