"""The load's integrity against the real PostgreSQL and moto's S3: objects checked against what
extract recorded, corrupt bodies, AppMetrica identity without silent merges, an honest
journal, one load per S3 key at a time, temporary files and after-commit work."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
import uuid
from datetime import date, datetime

import psycopg
import pytest
from test_load_concurrency import DEVICES, archive, day_events, put_day

from devtools.sandbox.appmetrica import generate_rows, iter_body
from dwh_helper.dwh.load_log import lock_key, unlock_key
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.schema import PartitionUnavailable, create_month_partitions
from dwh_helper.pipeline.amplitude import AMPLITUDE_FORMAT, load_amplitude_file
from dwh_helper.pipeline.appmetrica import day_window, load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import LoadError, load_raw_file
from dwh_helper.pipeline.temp_files import remove_leftovers
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform.event_mapping import amplitude_mapping

pytestmark = [pytest.mark.db, pytest.mark.s3]

APP = "1111"
DAY = date(2024, 3, 2)


def _rows(resource: str, per_day: int = 300) -> list[dict[str, str]]:
    since, until = day_window(DAY)
    return list(generate_rows(resource, APP, since, until, seed=5, events_per_day=per_day))


def _body(rows, fmt: str = "csv", fields=None) -> bytes:
    return b"".join(iter_body(rows, fields or tuple(rows[0]), fmt))


def _land(store: ObjectStore, key: str, body: bytes, recorded: bytes | None = None) -> None:
    """Put `body` at `key` with the size/SHA-256 metadata extract wrote for `recorded`."""
    recorded = body if recorded is None else recorded
    store.client.put_object(
        Bucket=store.bucket,
        Key=key,
        Body=body,
        Metadata={"size": str(len(recorded)), "sha256": hashlib.sha256(recorded).hexdigest()},
    )


def _count(conn, table: str = "appmetrica.events") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _journal(conn) -> list[tuple]:
    return conn.execute(
        "SELECT status, bytes, sha256, verified, error FROM load_log ORDER BY id"
    ).fetchall()


# -- verified objects -----------------------------------------------------------------


def test_a_csv_truncated_at_a_line_end_is_a_load_error_and_nothing_is_committed(
    store, repo, dwh_conn
):
    body = _body(_rows("events"))
    cut = body.index(b"\n", len(body) // 2) + 1  # a whole number of lines: parses fine
    key = raw_key(APP, "events", DAY)
    _land(store, key, body[:cut], recorded=body)
    with pytest.raises(LoadError) as error:
        load_appmetrica_file(store, key, repo)
    message = str(error.value)
    assert key in message and str(cut) in message and str(len(body)) in message
    assert "re-extract" in message and not error.value.retryable
    assert _count(dwh_conn) == 0
    ((status, size, _sha, _verified, journalled),) = _journal(dwh_conn)
    assert status == "failed" and size == cut and "re-extract" in journalled


@pytest.mark.parametrize("kind", ["appmetrica", "amplitude"])
def test_a_hash_mismatch_of_the_same_size_is_a_load_error_naming_both(kind, store, repo, dwh_conn):
    if kind == "appmetrica":
        body = _body(_rows("events"))
        key = raw_key(APP, "events", DAY)
        changed = body.replace(b"ru", b"RU", 1)  # same size, other bytes
        load = load_appmetrica_file
    else:
        body = archive(day_events(DAY, 374182, seed=1, count=50, late=0))
        key = "raw/amplitude/web/2024/03/02/web_20240302.zip"
        changed = body[:-30] + bytes(30)
        load = load_amplitude_file
    assert changed != body and len(changed) == len(body)
    _land(store, key, changed, recorded=body)
    with pytest.raises(LoadError) as error:
        load(store, key, repo)
    message = str(error.value)
    assert hashlib.sha256(body).hexdigest() in message
    assert hashlib.sha256(changed).hexdigest() in message
    assert key in message and "re-extract" in message and not error.value.retryable
    table = "appmetrica.events" if kind == "appmetrica" else "events_part"
    assert _count(dwh_conn, table) == 0
    assert [row[0] for row in _journal(dwh_conn)] == ["failed"]


def test_a_verified_load_journals_size_sha_and_verified(store, repo, dwh_conn):
    body = _body(_rows("events"))
    key = raw_key(APP, "events", DAY)
    _land(store, key, body)
    result = load_appmetrica_file(store, key, repo)
    assert result.verified is True
    ((status, size, sha, verified, error),) = _journal(dwh_conn)
    assert (status, size, sha, verified, error) == (
        "loaded",
        len(body),
        hashlib.sha256(body).hexdigest(),
        True,
        None,
    )


def test_an_object_without_metadata_loads_unverified_with_a_notice(store, repo, dwh_conn, caplog):
    rows = _rows("events")
    body = _body(rows)
    key = raw_key(APP, "events", DAY)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    with caplog.at_level("WARNING"):
        result = load_appmetrica_file(store, key, repo)
    assert result.inserted == {"events": len(rows)}
    assert "loading it unverified" in caplog.text
    ((status, size, sha, verified, _),) = _journal(dwh_conn)
    assert (status, size, sha, verified) == (
        "loaded",
        len(body),
        hashlib.sha256(body).hexdigest(),
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body>upstream error</body></html>\n",
        b"foo,bar\n1,2\n",
    ],
)
def test_a_body_that_is_not_a_logs_api_csv_is_corrupt(body, store, repo, dwh_conn):
    key = raw_key(APP, "events", DAY)
    _land(store, key, body)
    with pytest.raises(LoadError, match="corrupt file") as error:
        load_appmetrica_file(store, key, repo)
    assert key in str(error.value) and not error.value.retryable
    assert _count(dwh_conn) == 0
    assert [row[0] for row in _journal(dwh_conn)] == ["failed"]


# -- AppMetrica identity ----------------------------------------------------------------


def test_installations_without_identity_fields_keep_distinct_rows(store, repo, dwh_conn):
    """The real-shaped case: no installation_id / install_timestamp, one device installed
    twice — both rows stay; an exact duplicate line still collapses."""
    fields = ("appmetrica_device_id", "install_datetime", "os_name", "city")
    rows = [
        {"appmetrica_device_id": "555", "install_datetime": "2024-03-02 10:00:00",
         "os_name": "android", "city": "Moscow"},
        {"appmetrica_device_id": "555", "install_datetime": "2024-03-02 18:30:00",
         "os_name": "android", "city": "Moscow"},
        {"appmetrica_device_id": "777", "install_datetime": "2024-03-02 11:00:00",
         "os_name": "ios", "city": ""},
    ]  # fmt: skip
    key = raw_key(APP, "installations", DAY)
    _land(store, key, _body([*rows, rows[0]], fields=fields))  # the first line twice
    result = load_appmetrica_file(store, key, repo)
    assert result.rows_read == 4 and result.inserted == {"installations": 3}
    stored = dwh_conn.execute(
        "SELECT appmetrica_device_id, install_datetime FROM appmetrica.installations ORDER BY 2"
    ).fetchall()
    assert stored == [
        (555, datetime(2024, 3, 2, 10, 0)),
        (777, datetime(2024, 3, 2, 11, 0)),
        (555, datetime(2024, 3, 2, 18, 30)),
    ]
    (details,) = dwh_conn.execute("SELECT details FROM load_log").fetchone()
    assert details["identity"] == "all fields"
    assert details["identity_missing"] == ["installation_id", "install_timestamp"]
    assert set(details["identity_fields"]) == set(fields)


def test_a_file_with_the_identity_fields_reports_the_declared_identity(store, repo, dwh_conn):
    key = raw_key(APP, "installations", DAY)
    _land(store, key, _body(_rows("installations", per_day=400)))
    load_appmetrica_file(store, key, repo)
    (details,) = dwh_conn.execute("SELECT details FROM load_log").fetchone()
    assert details["identity"] == "declared"
    assert details["identity_fields"] == [
        "appmetrica_device_id",
        "installation_id",
        "install_timestamp",
    ]


# -- the journal -------------------------------------------------------------------------


def test_the_journal_has_the_real_end_duration_and_counts(store, repo, dwh_conn):
    rows = _rows("events")
    key = raw_key(APP, "events", DAY)
    _land(store, key, _body(rows))
    before = dwh_conn.execute("SELECT clock_timestamp()").fetchone()[0]
    load_appmetrica_file(store, key, repo)
    after = dwh_conn.execute("SELECT clock_timestamp()").fetchone()[0]
    started, finished, duration, read, inserted, pid = dwh_conn.execute(
        "SELECT started_at, finished_at, duration_seconds, rows_read, rows_inserted, "
        "backend_pid FROM load_log"
    ).fetchone()
    assert before <= started < finished <= after
    assert duration == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert read == len(rows) and inserted == {"events": len(rows)} and pid > 0


def test_a_second_load_waiting_for_the_key_finishes_already_loaded_unless_reloading(
    dwh_dsn, store, dwh_conn
):
    """Hold the key's lock, start two loads (both wait, journalled `running`), let go: one
    loads, the other finds its committed result and reads nothing; with reload=True a third
    waiting load loads again (inserting nothing new)."""
    rows = _rows("events")
    key = raw_key(APP, "events", DAY)
    _land(store, key, _body(rows))
    results: list = []

    def load(reload: bool = False) -> None:
        with open_connection(dwh_dsn) as conn:
            results.append(load_appmetrica_file(store, key, Repository(conn), reload=reload))

    for reload in ((False, False), (False, True)):
        with open_connection(dwh_dsn) as holder:
            lock_key(holder, key)
            threads = [threading.Thread(target=load, args=(flag,)) for flag in reload]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while _count(dwh_conn, "load_log WHERE status = 'running'") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            unlock_key(holder, key)
        for thread in threads:
            thread.join(60)
    first, second, third, fourth = results
    assert (first.status, first.inserted) == ("loaded", {"events": len(rows)})
    assert (second.status, second.rows_read, second.inserted) == ("already loaded", 0, {})
    assert {third.status, fourth.status} == {"loaded", "already loaded"} or (
        third.status == fourth.status == "loaded"
    )
    reloaded = [r for r in (third, fourth) if r.status == "loaded"]
    assert reloaded and all(r.inserted == {"events": 0} for r in reloaded)
    assert _count(dwh_conn) == len(rows)
    statuses = dwh_conn.execute("SELECT status FROM load_log ORDER BY id").fetchall()
    assert {s for (s,) in statuses} <= {"loaded", "already loaded"}
    same_as = dwh_conn.execute(
        "SELECT details->>'same_as' FROM load_log WHERE status = 'already loaded'"
    ).fetchall()
    assert same_as and all(value is not None for (value,) in same_as)


# -- temporary files -----------------------------------------------------------------------


def test_temporary_files_are_removed_and_dead_loads_leftovers_cleaned(
    store, repo, dwh_conn, tmp_path
):
    import socket

    host = socket.gethostname().replace("-", "_")
    root = tmp_path / "loads"
    dead = root / f"load-{host}-999999-abc"  # no such process
    old = root / "load-otherhost-12-old"
    live = root / f"load-{host}-{os.getppid()}-live"  # a live process, fresh
    for path in (dead, old, live):
        path.mkdir(parents=True)
        (path / "part.zip").write_bytes(b"x" * 10)
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    key = put_day(store, "web", DAY, day_events(DAY, 374182, seed=3, count=40, late=0))
    assert load_amplitude_file(store, key, repo, temp_dir=root).status == "loaded"
    assert sorted(p.name for p in root.iterdir()) == [live.name]
    assert remove_leftovers(root, max_age=0) == [live]  # older than max_age: removed too


# -- partitions and after-commit work ------------------------------------------------------


def test_partition_creation_gives_up_in_time_while_devices_are_being_written(dwh_dsn, dwh_conn):
    with psycopg.connect(dwh_dsn) as writer:
        writer.execute("INSERT INTO mobile_devices (device_id) VALUES (%s)", (DEVICES[0],))
        started = time.monotonic()
        with pytest.raises(PartitionUnavailable, match="2023-05"):
            create_month_partitions(dwh_conn, [date(2023, 5, 9)], lock_timeout=0.2, wait=0.6)
        assert time.monotonic() - started < 5
        writer.commit()
    assert create_month_partitions(dwh_conn, [date(2023, 5, 9)]) == ["events_part_202305"]


def test_a_failing_after_commit_step_never_fails_the_committed_load(store, repo, dwh_conn):
    calls = []

    def flaky(conn, result) -> None:
        calls.append(result.key)
        raise RuntimeError("statistics service down")

    events = day_events(DAY, 374182, seed=4, count=30, late=0)
    key = put_day(store, "web", DAY, events)
    create_month_partitions(dwh_conn, [date.fromisoformat(e["event_time"][:10]) for e in events])
    raw_format = dataclasses.replace(AMPLITUDE_FORMAT, after_commit=flaky)
    result = load_raw_file(store, key, repo, amplitude_mapping(), raw_format)
    assert result.status == "loaded" and len(calls) == 3
    assert _count(dwh_conn, "events_part") == len(events)
    status, details = dwh_conn.execute("SELECT status, details FROM load_log").fetchone()
    assert status == "loaded" and "statistics service down" in details["after_commit_error"]


def test_late_events_get_their_partition_and_none_lands_in_default(store, repo, dwh_conn):
    events = day_events(DAY, 374182, seed=6, count=60, late=10)
    key = put_day(store, "web", DAY, events)
    result = load_amplitude_file(store, key, repo)
    assert result.inserted["events_part"] == len(events)
    assert _count(dwh_conn, "events_part_default") == 0
    assert _count(dwh_conn, "events_part_202311") == 10


def test_late_events_of_the_previous_month_cost_no_second_pass(store, repo, dwh_conn, caplog):
    """A day's late events mostly belong to the month before it: its partition is created with
    the window's before the data transaction, so the file is read once."""
    day = date(2024, 3, 1)
    events = day_events(day, 374182, seed=7, count=60, late=0)
    for offset, event in enumerate(events[-12:]):
        event["event_time"] = f"2024-02-{20 + offset % 9:02d} 10:00:00.000000"
    key = put_day(store, "web", day, events)
    with caplog.at_level("INFO", logger="dwh_helper.pipeline.load"):
        result = load_amplitude_file(store, key, repo)
    assert result.inserted["events_part"] == len(events)
    february = sum(event["event_time"].startswith("2024-02") for event in events)
    assert february >= 12 and _count(dwh_conn, "events_part_202402") == february
    assert _count(dwh_conn, "events_part_default") == 0
    assert not [r for r in caplog.records if "loading again" in r.getMessage()]


def test_a_load_leaves_the_collector_as_it_found_it(store, repo):
    """The raw-file loader pauses collection while it reads and turns it back on after a load
    that failed as after one that succeeded."""
    import gc

    store.client.put_object(Bucket=store.bucket, Key="raw/amplitude/web/bad.zip", Body=b"no zip")
    assert gc.isenabled()
    with pytest.raises(LoadError):
        load_amplitude_file(store, "raw/amplitude/web/bad.zip", repo)
    assert gc.isenabled()


@pytest.mark.unit
@pytest.mark.parametrize("resource", ["events", "installations", "sessions_starts"])
def test_without_identity_fields_every_path_falls_back_to_the_same_key(resource):
    """The loader's formatter, `row_uuid` and `RowConverter` agree on the fallback key, and it
    tells apart rows the declared identity (with its fields missing) would merge."""
    from dwh_helper.dwh.appmetrica_schema import appmetrica_table
    from dwh_helper.transform.appmetrica_formatter import RowFormatter
    from dwh_helper.transform.appmetrica_mapping import load_appmetrica_mapping
    from tests.support.appmetrica_oracle import RowConverter, cast_record, row_uuid

    mapping = load_appmetrica_mapping().resource(resource)
    identity = mapping.identity
    rows = [
        {k: v for k, v in row.items() if k not in identity[1:]}
        for row in _rows(resource, per_day=200)
    ]
    formatter = RowFormatter(mapping, APP, header=list(rows[0]))
    assert formatter.identity_fallback and identity[0] in formatter.identity
    converter = RowConverter(appmetrica_table(resource), APP)
    keys = set()
    for number, record in enumerate(rows, start=1):
        key = uuid.UUID(formatter.line(list(record.values())).split("\t")[0])
        assert key == row_uuid(resource, cast_record(resource, record, row=number), APP)
        assert key == converter(record, row=number)[0]
        keys.add(key)
    distinct = {tuple(row.values()) for row in rows}
    assert len(keys) == len(distinct)
