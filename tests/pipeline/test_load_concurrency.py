"""Loads in parallel processes against the real PostgreSQL and moto's S3: no deadlock, no
duplicate, final tables equal to one load; a loader killed mid-file leaves an honest journal.

Each file is small (a few hundred events) with late events of a month that has no partition
yet and devices shared between files, so every run meets partition creation, the key lock
and overlapping mobile_devices rows. Each scenario runs five times in a row.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import signal
import tempfile
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import load_child  # tests/pipeline/load_child.py, importable as the fork server's preload
import psycopg
import pytest

from devtools.sandbox.amplitude_events import generate_hour
from dwh_helper.dwh.load_log import KEY_LOCK_CLASS
from dwh_helper.dwh.schema import create_month_partitions
from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.storage.s3 import ObjectStore

pytestmark = [pytest.mark.db, pytest.mark.s3]

DEVICES = [f"device-{i:03d}" for i in range(40)]
LATE_MONTH = "2023-11"
RUNS = range(5)


def day_events(day: date, project_id: int, seed: int, count: int = 300, late: int = 25):
    """A day's events: devices drawn from a pool every file shares, the last `late` of them
    late events of LATE_MONTH (a month without a partition)."""
    events = generate_hour(project_id, datetime(day.year, day.month, day.day, 1, tzinfo=UTC),
                           seed, count)  # fmt: skip
    rng = random.Random(seed)
    for event in events:
        event["device_id"] = rng.choice(DEVICES)
    for offset, event in enumerate(events[len(events) - late :]):
        event["event_time"] = f"{LATE_MONTH}-{1 + offset % 28:02d} 10:00:00.000000"
    return events


def archive(events) -> bytes:
    """An Amplitude export ZIP with one gzip NDJSON entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        body = b"\n".join(json.dumps(e).encode() for e in events) + b"\n"
        zipped.writestr("374182/374182_part#0.json.gz", gzip.compress(body, mtime=0))
    return buffer.getvalue()


def put_day(store: ObjectStore, source: str, day: date, events) -> str:
    """Land a day's archive as extract does: with window, size and SHA-256 metadata."""
    body = archive(events)
    key = f"raw/amplitude/{source}/{day:%Y/%m/%d}/{source}_{day:%Y%m%d}.zip"
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    store.client.put_object(
        Bucket=store.bucket,
        Key=key,
        Body=body,
        Metadata={
            "source": source,
            "window-start": start.isoformat(),
            "window-end": (start + timedelta(hours=23)).isoformat(),
            "size": str(len(body)),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    return key


class Loader:
    """A loader process (forked from the fork server) and the file it reports to."""

    def __init__(self, process, out: Path) -> None:
        self.process, self.out = process, out

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def report(self) -> dict:
        return json.loads(self.out.read_text()) if self.out.exists() else {}


def start_child(dsn: str, s3_server, store: ObjectStore, key: str, **extra) -> Loader:
    """A loader process for one key."""
    out = Path(tempfile.mkstemp(prefix="loader-", suffix=".json")[1])
    out.unlink()
    spec = {
        "dsn": dsn,
        "endpoint": s3_server.endpoint_url,
        "region": s3_server.region,
        "bucket": store.bucket,
        "key": key,
        "source": "amplitude",
        "out": str(out),
        **extra,
    }
    process = load_child.context().Process(target=load_child.run_load, args=(spec,))
    process.start()
    return Loader(process, out)


def finish(children: list[Loader]) -> list[dict]:
    """Wait for every child; each must succeed. Their summaries."""
    results = []
    for child in children:
        child.process.join(120)
        report = child.report()
        assert child.process.exitcode == 0, f"loader failed ({child.poll()}): {report}"
        child.out.unlink()
        results.append(report)
    return results


def deadlocks(conn: psycopg.Connection) -> int:
    """Deadlocks PostgreSQL detected in this database so far."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0])


def assert_one_load(
    conn: psycopg.Connection, events_by_key: dict[str, list[dict]], also: set[str] = frozenset()
) -> None:
    """Final tables equal one load of every file: each event once, each device once, no row
    in the default partition, nothing left running, no deadlock."""
    events = [e for file_events in events_by_key.values() for e in file_events]
    uuids = {e["uuid"] for e in events}
    for table in ("events_part", "technical_data", "tmp_event_properties", "user_locations"):
        count, distinct = conn.execute(
            f"SELECT count(*), count(DISTINCT uuid) FROM {table}"
        ).fetchone()
        assert count == distinct == len(uuids), table
    devices = {e["device_id"] for e in events}
    assert conn.execute("SELECT count(*) FROM mobile_devices").fetchone()[0] == len(devices)
    assert conn.execute("SELECT count(*) FROM events_part_default").fetchone()[0] == 0
    late = sum(1 for e in events if e["event_time"].startswith(LATE_MONTH))
    if late:
        assert conn.execute("SELECT count(*) FROM events_part_202311").fetchone()[0] == late
    statuses = conn.execute("SELECT status, count(*) FROM load_log GROUP BY 1").fetchall()
    assert {status for status, _ in statuses} <= {"loaded", "already loaded", *also}, statuses
    inserted = conn.execute(
        "SELECT s3_key, sum((rows_inserted->>'events_part')::int) FROM load_log "
        "WHERE status = 'loaded' GROUP BY 1"
    ).fetchall()
    assert dict(inserted) == {key: len(evs) for key, evs in events_by_key.items()}
    assert deadlocks(conn) == 0


@pytest.mark.parametrize("run", RUNS)
def test_same_day_by_two_processes_started_together(run, dwh_dsn, dwh_conn, s3_server, store):
    events = day_events(date(2024, 3, 2), 374182, seed=run)
    key = put_day(store, "web", date(2024, 3, 2), events)
    results = finish([start_child(dwh_dsn, s3_server, store, key) for _ in range(2)])
    assert sorted(r["status"] for r in results) in (
        ["already loaded", "loaded"],
        ["loaded", "loaded"],
    )
    assert_one_load(dwh_conn, {key: events})


def _holds_key_lock(conn: psycopg.Connection, key: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s "
            "AND objid::bigint = (hashtext(%s)::bigint & 4294967295)",
            (KEY_LOCK_CLASS, key),
        ).fetchone()
    )


@pytest.mark.parametrize("run", RUNS)
def test_same_day_by_a_second_process_started_while_the_first_loads(
    run, dwh_dsn, dwh_conn, s3_server, store
):
    """The second starts once the first holds the key (mid-load) — or has already finished."""
    events = day_events(date(2024, 3, 2), 374182, seed=10 + run)
    key = put_day(store, "web", date(2024, 3, 2), events)
    first = start_child(dwh_dsn, s3_server, store, key)
    deadline = time.monotonic() + 60
    while first.poll() is None and not _holds_key_lock(dwh_conn, key):
        assert time.monotonic() < deadline, "the first loader never took the key"
        time.sleep(0.01)
    second = start_child(dwh_dsn, s3_server, store, key)
    results = finish([first, second])
    assert results[0]["status"] == "loaded"
    assert results[1]["status"] in ("loaded", "already loaded")
    assert_one_load(dwh_conn, {key: events})


@pytest.mark.parametrize("run", RUNS)
def test_web_and_mobile_of_one_day_at_once(run, dwh_dsn, dwh_conn, s3_server, store):
    day = date(2024, 3, 2)
    files = {
        put_day(store, source, day, evs): evs
        for source, evs in (
            ("web", day_events(day, 374182, seed=20 + run)),
            ("mobile", day_events(day, 555001, seed=30 + run)),
        )
    }
    results = finish([start_child(dwh_dsn, s3_server, store, key) for key in files])
    assert [r["status"] for r in results] == ["loaded", "loaded"]
    assert_one_load(dwh_conn, files)


@pytest.mark.parametrize("run", RUNS)
def test_four_days_in_parallel(run, dwh_dsn, dwh_conn, s3_server, store):
    files = {}
    for offset in range(4):
        day = date(2024, 3, 2) + timedelta(days=offset)
        files[put_day(store, "web", day, day_events(day, 374182, seed=40 + 4 * run + offset))] = (
            None
        )
    for key in files:
        day = date(*map(int, key.split("/")[3:6]))
        files[key] = day_events(day, 374182, seed=40 + 4 * run + (day - date(2024, 3, 2)).days)
    results = finish([start_child(dwh_dsn, s3_server, store, key) for key in files])
    assert [r["status"] for r in results] == ["loaded"] * 4
    assert_one_load(dwh_conn, files)


def test_a_loader_killed_mid_file_is_abandoned_and_the_rerun_equals_one_load(
    dwh_dsn, dwh_conn, s3_server, store, repo, tmp_path
):
    """kill -9 while the loader is inside its data transaction (held up by an uncommitted
    device row of another session): the journal keeps the attempt, the next load marks it
    `abandoned`, loads everything, and no temporary file is left."""
    events = day_events(date(2024, 3, 2), 374182, seed=99, late=0)
    key = put_day(store, "web", date(2024, 3, 2), events)
    temp = tmp_path / "loads"
    # the months' partitions exist (creating one would wait for the blocker's device row)
    months = {date.fromisoformat(e["event_time"][:7] + "-01") for e in events}
    create_month_partitions(dwh_conn, {*months, date(2024, 3, 1)})
    with psycopg.connect(dwh_dsn) as blocker:
        blocker.execute("INSERT INTO mobile_devices (device_id) VALUES (%s)", (DEVICES[0],))
        child = start_child(dwh_dsn, s3_server, store, key, temp_dir=str(temp))
        deadline = time.monotonic() + 60
        while True:  # until the child's data transaction waits for the blocker's row
            waiting = dwh_conn.execute(
                "SELECT 1 FROM load_log l JOIN pg_locks k ON k.pid = l.backend_pid "
                "WHERE l.status = 'running' AND NOT k.granted AND k.locktype = 'transactionid'"
            ).fetchone()
            if waiting:
                break
            assert child.poll() is None, child.report()
            assert time.monotonic() < deadline, "the loader never reached its data"
            time.sleep(0.01)
        assert [p.name for p in temp.iterdir()][0].startswith("load-")
        assert any(p.suffix == ".zip" for p in next(temp.iterdir()).iterdir())
        os.kill(child.pid, signal.SIGKILL)
        child.process.join(30)
        assert child.poll() == -signal.SIGKILL
        blocker.rollback()
    assert dwh_conn.execute("SELECT status FROM load_log").fetchall() == [("running",)]
    assert dwh_conn.execute("SELECT count(*) FROM events_part").fetchone()[0] == 0

    result = load_amplitude_file(store, key, repo, temp_dir=temp)
    assert result.status == "loaded"
    journal = dwh_conn.execute(
        "SELECT status, error IS NOT NULL, finished_at IS NOT NULL FROM load_log ORDER BY id"
    ).fetchall()
    assert journal == [("abandoned", True, True), ("loaded", False, True)]
    assert_one_load(dwh_conn, {key: events}, also={"abandoned"})
    assert list(temp.iterdir()) == []
