"""Optimistic COPY against the real PostgreSQL and moto's S3: every load, replayed once with
straight COPY (`ETL_OPTIMISTIC_COPY=true`) and once through staging only (`false`) in two
fresh databases, leaves the same tables row for row — a first load, a re-load, an
overlapping file, a file with duplicate records inside one batch — for Amplitude and
AppMetrica. Not timed: the speed is measured in bench/."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date, timedelta

import psycopg
import pytest
from psycopg import sql
from test_load_concurrency import day_events, put_day
from test_load_integrity import _body, _land, _rows

from dwh_helper.dwh.copy_text import TEXT
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.schema import migrate
from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.appmetrica import load_appmetrica_file, raw_key
from dwh_helper.pipeline.table_writer import without_duplicate_keys
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform.event_mapping import amplitude_mapping

pytestmark = [pytest.mark.db, pytest.mark.s3]

DAY = date(2024, 3, 2)
APP = "1111"
AMPLITUDE_TABLES = [table.spec for table in amplitude_mapping().tables]
STRAIGHT = re.compile(r"(\d+) rows COPY'd straight")


@pytest.fixture
def two_databases(dwh_dsn: str, empty_dsn: str) -> dict[bool, str]:
    """Two fresh DWH databases: True for the optimistic path, False for staging only."""
    with open_connection(empty_dsn) as conn:
        migrate(conn)
    return {True: dwh_dsn, False: empty_dsn}


def _snapshot(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[str, list]:
    """Every row of every table, in a total order (all columns)."""
    result = {}
    for schema, name in tables:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position",
                (schema, name),
            )
        ]
        order = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
        result[name] = conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(schema, name), order)
        ).fetchall()
    return result


def _replay(
    dsns: dict[bool, str],
    steps: list[Callable[[Repository], object]],
    tables: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> tuple[dict[bool, list], dict[bool, list[int]]]:
    """Run the same loads on both paths; each database's final tables and journal, and the
    rows each load COPY'd straight (from the loader's log line)."""
    snapshots: dict[bool, list] = {}
    straight: dict[bool, list[int]] = {}
    for optimistic, dsn in dsns.items():
        monkeypatch.setenv("ETL_OPTIMISTIC_COPY", str(optimistic).lower())
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dwh_helper.pipeline.load"):
            with open_connection(dsn) as conn:
                repo = Repository(conn)
                results = [step(repo) for step in steps]
                journal = conn.execute(
                    "SELECT s3_key, status, rows_read, rows_inserted, rows_rejected "
                    "FROM load_log ORDER BY id"
                ).fetchall()
                snapshots[optimistic] = [
                    [result.as_dict() for result in results],
                    journal,
                    _snapshot(conn, tables),
                ]
        straight[optimistic] = [
            int(match.group(1))
            for record in caplog.records
            if (match := STRAIGHT.search(record.getMessage()))
        ]
    for summary in snapshots.values():  # timings differ between the paths; nothing else may
        for result in summary[0]:
            result.pop("seconds", None)
    return snapshots, straight


def _amplitude_tables() -> list[tuple[str, str]]:
    return [(spec.schema, spec.name) for spec in AMPLITUDE_TABLES]


def test_amplitude_first_load_reload_and_overlap_equal_the_staging_path(
    two_databases, store: ObjectStore, monkeypatch, caplog
):
    first = day_events(DAY, 374182, seed=11, count=400)
    key_first = put_day(store, "mobile", DAY, first)
    # an overlapping file: the second half of the first day's events again, plus new ones
    later = day_events(DAY + timedelta(days=1), 374182, seed=12, count=300)
    key_overlap = put_day(store, "mobile", DAY + timedelta(days=1), later + first[200:])
    steps = [
        lambda repo: load_amplitude_file(store, key_first, repo, batch_size=100),
        lambda repo: load_amplitude_file(store, key_first, repo, batch_size=100, reload=True),
        lambda repo: load_amplitude_file(store, key_overlap, repo, batch_size=100),
    ]
    snapshots, straight = _replay(two_databases, steps, _amplitude_tables(), monkeypatch, caplog)
    assert snapshots[True] == snapshots[False]
    results, _journal, tables = snapshots[True]
    assert len(tables["events_part"]) == 400 + 300
    assert results[1]["inserted"] == {name: 0 for name in results[1]["inserted"]}
    assert sum(results[2]["inserted"].values()) > 0
    # the first load went straight (every table but the devices); the re-load through staging;
    # the overlapping file's new events went straight, its old ones (from batch 4) through
    # staging once it met them
    devices = len({event["device_id"] for event in first})
    assert straight[True][0] == sum(results[0]["inserted"].values()) - devices
    assert straight[True][1] == 0
    assert straight[True][2] == sum(results[2]["inserted"].values())
    assert straight[False] == [0, 0, 0]


def test_amplitude_duplicates_inside_a_batch_do_not_defeat_the_straight_copy(
    two_databases, store: ObjectStore, monkeypatch, caplog
):
    events = day_events(DAY, 374182, seed=21, count=300)
    # each tenth event twice in a row, and one three times: the same uuid inside one batch
    doubled = []
    for number, event in enumerate(events):
        doubled.append(event)
        if number % 10 == 0:
            doubled.append(dict(event))
    doubled.append(dict(events[-1]))
    key = put_day(store, "mobile", DAY, doubled)
    steps = [lambda repo: load_amplitude_file(store, key, repo, batch_size=1000)]
    snapshots, straight = _replay(two_databases, steps, _amplitude_tables(), monkeypatch, caplog)
    assert snapshots[True] == snapshots[False]
    results, _journal, tables = snapshots[True]
    assert len(tables["events_part"]) == len(events)
    assert results[0]["rows_read"] == len(doubled)
    devices = len({event["device_id"] for event in events})
    assert straight[True] == [sum(results[0]["inserted"].values()) - devices]


def test_appmetrica_first_load_reload_and_overlap_equal_the_staging_path(
    two_databases, store: ObjectStore, monkeypatch, caplog
):
    rows = _rows("events", per_day=400)
    key_first = raw_key(APP, "events", DAY)
    _land(store, key_first, _body(rows))
    key_overlap = raw_key(APP, "events", DAY + timedelta(days=1))
    extra = _rows("events", per_day=150)
    for row in extra:  # other events than the first file's
        row["event_name"] = "overlap-" + row.get("event_name", "")
    _land(store, key_overlap, _body(extra + rows[200:]))
    key_doubled = raw_key(APP, "events", DAY + timedelta(days=2))
    doubled = _rows("events", per_day=50)
    for row in doubled:
        row["event_name"] = "doubled-" + row.get("event_name", "")
    _land(store, key_doubled, _body([row for row in doubled for _ in (1, 2)]))
    steps = [
        lambda repo: load_appmetrica_file(store, key_first, repo, batch_size=100),
        lambda repo: load_appmetrica_file(store, key_first, repo, batch_size=100, reload=True),
        lambda repo: load_appmetrica_file(store, key_overlap, repo, batch_size=100),
        lambda repo: load_appmetrica_file(store, key_doubled, repo, batch_size=1000),
    ]
    tables = [("appmetrica", "events")]
    snapshots, straight = _replay(two_databases, steps, tables, monkeypatch, caplog)
    assert snapshots[True] == snapshots[False]
    results, _journal, loaded = snapshots[True]
    assert len(loaded["events"]) == 400 + 150 + 50
    assert results[3]["rows_read"] == 100
    # the overlapping file's first batch holds new rows only (straight); a later one meets the
    # first file's rows: it and the rest go through staging
    assert straight[True][:2] == [400, 0]
    assert 0 < straight[True][2] < 150
    assert straight[True][3] == 50
    assert straight[False] == [0, 0, 0, 0]


class _Table:
    class spec:  # noqa: N801 - stands in for a TableSpec
        key = ("uuid", "event_time")

    columns = ("uuid", "device_id", "event_time", "name")
    copy_dialect = TEXT
    first_per_file = False


def test_without_duplicate_keys_keeps_the_first_row_of_each_key() -> None:
    data = (
        b"u1\td1\t2024-01-01\ta\n"
        b"u2\td1\t2024-01-01\tb\n"
        b"u1\td2\t2024-01-01\tc\n"  # the same key as the first row: dropped
        b"u1\td1\t2024-01-02\td\n"  # same uuid, other event_time: another key
    )
    kept, dropped = without_duplicate_keys(_Table, data)
    assert dropped == 1
    assert kept == b"u1\td1\t2024-01-01\ta\nu2\td1\t2024-01-01\tb\nu1\td1\t2024-01-02\td\n"
    assert without_duplicate_keys(_Table, kept) == (kept, 0)


def test_a_key_the_journal_saw_loaded_goes_through_staging_from_the_start(
    repo: Repository, dwh_conn, store: ObjectStore, caplog
):
    """The same S3 key landed again with more events (a re-extract): the journal says the key
    was loaded, so no straight COPY is tried; the new events load, the old ones are skipped."""
    events = day_events(DAY, 374182, seed=31, count=250)
    key = put_day(store, "mobile", DAY, events[:150])
    with caplog.at_level(logging.INFO, logger="dwh_helper.pipeline.load"):
        load_amplitude_file(store, key, repo, batch_size=100)
        put_day(store, "mobile", DAY, events[150:] + events[:150])
        again = load_amplitude_file(store, key, repo, batch_size=100)
    straight = [
        int(match.group(1))
        for record in caplog.records
        if (match := STRAIGHT.search(record.getMessage()))
    ]
    # the second file's first batch (100 events) is all new: without the journal's word it
    # would have gone straight
    assert straight[1] == 0 < straight[0]
    assert again.inserted["events_part"] == 100
    count = dwh_conn.execute("SELECT count(*) FROM events_part").fetchone()[0]
    assert count == 250
