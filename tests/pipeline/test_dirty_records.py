"""Issue 12: a bad value costs a value, a bad record costs a record — never a file.

For Amplitude (ZIP) and AppMetrica (CSV and JSON): a file of good records plus one record per
dirty case goes through the real loader into the real PostgreSQL from moto's S3. Each dirty
record is loaded with a repair, loaded with a NULL and a report, or rejected — as
docs/mappings.md documents — the good records load exactly, load_log counts match, and no raw
row text reaches load_log.error or the log. Also: a PostgreSQL data error forced past the value
layer is recovered row by row (the last line of defence).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

import psycopg
import pytest

from devtools.sandbox.amplitude_events import generate_hour
from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.appmetrica import load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import LoadError, as_load_error
from dwh_helper.storage.s3 import ObjectReadError, ObjectStore
from dwh_helper.transform.event_mapping import amplitude_mapping
from tests.dirty_cases import (
    APP,
    DAY,
    ENTRY,
    GOOD,
    KEY,
    amplitude_dirty_file,
    appmetrica_body,
    appmetrica_rows,
    archive,
    check_amplitude_dirty_load,
)

pytestmark = [pytest.mark.db, pytest.mark.s3]


def _put(store: ObjectStore, key: str, body: bytes) -> None:
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)


def test_amplitude_dirty_file_loads_with_each_dirty_record_as_documented(
    store, repo, dwh_conn, caplog
):
    good, dirty, body = amplitude_dirty_file()
    _put(store, KEY, body)
    with caplog.at_level(logging.DEBUG):
        result = load_amplitude_file(store, KEY, repo)
    assert result.rows_read == GOOD + len(dirty)
    assert result.rejected == 4
    assert result.values_nulled == 4
    assert result.values_repaired == 2
    check_amplitude_dirty_load(dwh_conn, good, dirty)
    log_row = dwh_conn.execute(
        "SELECT status, rows_read, rows_rejected, values_nulled, values_repaired, error "
        "FROM load_log"
    ).fetchone()
    assert log_row == ("loaded", GOOD + len(dirty), 4, 4, 2, None)
    for secret in ("５０９０７１", "84141a73", "Mo\x00scow", "sign\x00up", "1e999999"):
        assert secret not in caplog.text
    # a re-load inserts nothing new and reports the same
    again = load_amplitude_file(store, KEY, repo)
    assert sum(again.inserted.values()) == 0 and again.rejected == 4


def test_too_many_rejects_name_columns_but_no_values(store, repo, dwh_conn, caplog):
    good = generate_hour(374182, datetime(2024, 3, 2, 11, tzinfo=UTC), 5, 20)
    lines = [json.dumps(e).encode() for e in good]
    lines += [json.dumps({**good[0], "uuid": "secret-ehr-12345"}).encode()] * 3
    _put(store, KEY, archive(lines))
    with caplog.at_level(logging.DEBUG), pytest.raises(LoadError) as caught:
        load_amplitude_file(store, KEY, repo)
    assert not caught.value.retryable
    error = dwh_conn.execute("SELECT error FROM load_log").fetchone()[0]
    assert "events_part.uuid: not a uuid" in error
    assert "secret-ehr-12345" not in error and "secret-ehr-12345" not in str(caught.value)
    assert "secret-ehr-12345" not in caplog.text


# -- the last line of defence ----------------------------------------------------------------


def _spoiled_mapping(good: list[dict]) -> object:
    """The Amplitude mapping, but handing PostgreSQL events_part lines it refuses (bypassing
    the value layer): event 10's event_time, event 20's user_id, event 30's device (no
    mobile_devices row: a foreign key error)."""
    mapping = amplitude_mapping()
    events_part = next(t for t in mapping.tables if t.spec.name == "events_part")
    position = {name: i for i, name in enumerate(events_part.columns)}
    fast = mapping.map_record
    spoiled = {good[10]["uuid"]: "event_time", good[20]["uuid"]: "user_id"}
    ghost = good[30]["uuid"]

    def spoil(record):
        mapped = fast(record)
        out = []
        for table, text, key in mapped:
            if table is events_part and text is not None:
                fields = text.split("\t")
                uuid = fields[position["uuid"]]
                if uuid in spoiled:
                    fields[position[spoiled[uuid]]] = "not-a-value"
                if uuid == ghost:  # a device that has no mobile_devices row: a foreign key error
                    fields[position["device_id"]] = "ghost-device"
                text = "\t".join(fields)
            out.append((table, text, key))
        return out

    class Spoiled:
        """The mapping, but with `spoil` as its record mapper (bypassing the value layer)."""

        def __getattr__(self, name):
            return getattr(mapping, name)

        def map_record(self, record):
            return spoil(record)

    return Spoiled()


def test_postgres_data_errors_past_the_value_layer_cost_a_row_or_a_value(store, repo, dwh_conn):
    """Bypass the value layer: the mapping hands PostgreSQL lines it refuses."""
    good = generate_hour(374182, datetime(2024, 3, 2, 12, tzinfo=UTC), 5, 300)
    _put(store, KEY, archive([json.dumps(e).encode() for e in good]))
    result = load_amplitude_file(store, KEY, repo, _spoiled_mapping(good))
    assert result.rows_read == 300
    assert result.rejected == 2  # the event_time row and the foreign key row
    assert result.values_nulled == 1  # user_id stored NULL
    assert result.inserted["events_part"] == 298
    assert result.inserted["technical_data"] == 300
    rejects = dwh_conn.execute(
        "SELECT kind, table_name, column_name, record_id, entry, line, reason, value "
        "FROM load_rejects ORDER BY line"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rejects] == [
        ("record", "events_part", "event_time", good[10]["uuid"]),
        ("value", "events_part", "user_id", good[20]["uuid"]),
        ("record", "events_part", None, good[30]["uuid"]),
    ]
    assert [r[5] for r in rejects] == [11, 21, 31] and {r[4] for r in rejects} == {ENTRY}
    assert "invalid input syntax" in rejects[0][6] and "SQLSTATE 22007" in rejects[0][6]
    assert "not-a-value" not in rejects[0][6]  # PostgreSQL's reason, not the row's text
    assert rejects[1][7] == "not-a-value"
    assert "foreign key" in rejects[2][6]
    assert dwh_conn.execute(
        "SELECT user_id FROM events_part WHERE uuid = %s", (good[20]["uuid"],)
    ).fetchone() == (None,)


def test_a_reload_meets_postgres_refusals_as_the_first_load_did(store, repo, dwh_conn):
    """A re-load skips present rows on their key and reads the others' values from text: rows
    deleted since the first load come back as they were, and a value or row PostgreSQL
    refuses costs that value or that row, as in the first load (the re-load's rejects are the
    first load's)."""
    good = generate_hour(374182, datetime(2024, 3, 2, 12, tzinfo=UTC), 5, 300)
    _put(store, KEY, archive([json.dumps(e).encode() for e in good]))
    mapping = _spoiled_mapping(good)
    load_amplitude_file(store, KEY, repo, mapping, batch_size=100)
    tables = ("events_part", "technical_data", "tmp_event_properties", "user_locations")
    snapshot = "SELECT * FROM {} ORDER BY uuid"
    first = {name: dwh_conn.execute(snapshot.format(name)).fetchall() for name in tables}
    gone = [event["uuid"] for event in good[15:25] + good[150:160]]  # event 20: user_id NULL
    for name in tables:
        dwh_conn.execute(f"DELETE FROM {name} WHERE uuid = ANY(%s::uuid[])", (gone,))
    again = load_amplitude_file(store, KEY, repo, mapping, batch_size=100, reload=True)
    assert again.inserted == {
        "mobile_devices": 0,
        "events_part": 20,
        "technical_data": 20,
        "tmp_event_properties": 20,
        "tmp_user_properties": 0,
        "user_locations": 20,
    }
    assert (again.rejected, again.values_nulled) == (2, 1)
    assert {name: dwh_conn.execute(snapshot.format(name)).fetchall() for name in tables} == first
    rejects = dwh_conn.execute(
        "SELECT kind, table_name, column_name, record_id, line, value FROM load_rejects ORDER BY id"
    ).fetchall()
    assert len(rejects) == 6 and sorted(rejects[:3], key=str) == sorted(rejects[3:], key=str)
    assert sorted((r[0], str(r[2]), r[4]) for r in rejects[3:]) == [
        ("record", "None", 31),
        ("record", "event_time", 11),
        ("value", "user_id", 21),
    ]


# -- errors that tell the truth ---------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.SerializationFailure("could not serialize"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.OperationalError("connection lost"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (ObjectReadError("s3://b/k: read failed after 10 bytes"), True),
        (TimeoutError("timed out"), True),
        (psycopg.errors.InvalidTextRepresentation("invalid input syntax"), False),
        (psycopg.errors.StatementTooComplex("stack depth limit exceeded"), False),
        (psycopg.errors.UndefinedColumn("column x does not exist"), False),
        (ValueError("bad"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_every_error_of_a_load_is_a_load_error_with_honest_retryable(error, retryable):
    load_error = as_load_error("raw/k.zip", error)
    assert isinstance(load_error, LoadError)
    assert load_error.retryable is retryable
    assert str(load_error).startswith("raw/k.zip")


def test_a_database_error_message_keeps_no_row_text(dwh_conn):
    with pytest.raises(psycopg.DataError) as caught:
        dwh_conn.execute("SELECT 'EHR-4711 female 57'::text::bigint")
    message = str(as_load_error("raw/k.zip", caught.value))
    assert "EHR-4711" not in message and "invalid input syntax" in message


# -- AppMetrica -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_appmetrica_dirty_file_loads_with_each_dirty_record_as_documented(
    store, repo, dwh_conn, fmt, caplog
):
    good, dirty = appmetrica_rows()
    rows = list(good)
    for offset, (_case, row, _expect) in enumerate(dirty):
        rows.insert(41 * (offset + 1), row)
    key = raw_key(APP, "events", DAY, fmt)
    _put(store, key, appmetrica_body(rows, fmt))
    with caplog.at_level(logging.DEBUG):
        result = load_appmetrica_file(store, key, repo)
    rejected = [d for d in dirty if "rejected" in d[2]]
    nulled = [d for d in dirty if "nulled" in d[2]]
    assert result.rows_read == len(rows)
    assert result.rejected == len(rejected) == 4
    assert result.values_nulled == len(nulled) == 3
    assert result.values_repaired == 2
    assert result.inserted == {"events": len(rows) - 4}
    loaded = dwh_conn.execute(
        "SELECT appmetrica_device_id::text, event_name, event_timestamp, city, event_json "
        "FROM appmetrica.events"
    ).fetchall()
    dirty_ids = {row["appmetrica_device_id"] for _c, row, _e in dirty}

    def canonical(device, name, moment, city, event_json):
        return device, name, moment, city, json.dumps(event_json, sort_keys=True)

    expected = Counter(  # exact: the typed values of the source strings
        canonical(
            row["appmetrica_device_id"],
            row["event_name"],
            datetime.fromtimestamp(int(row["event_timestamp"]), tz=UTC),
            row["city"] or None,
            json.loads(row["event_json"]) if row["event_json"] else None,
        )
        for row in good
    )
    assert Counter(canonical(*row) for row in loaded if row[0] not in dirty_ids) == expected
    by_device = {row[0]: row[1:] for row in loaded if row[0] in dirty_ids}
    assert by_device[str(10**15 + 1)][2] == "Moscow"
    assert by_device[str(10**15 + 2)][3] == {"screen": "ab"}
    for _case, row, expect in nulled:
        column = expect["nulled"]
        value = dwh_conn.execute(
            f"SELECT {column} FROM appmetrica.events WHERE appmetrica_device_id = %s",
            (int(row["appmetrica_device_id"]),),
        ).fetchone()
        assert value == (None,), column
    reports = dwh_conn.execute(
        "SELECT kind, column_name, record_id, value, entry, line FROM load_rejects ORDER BY line"
    ).fetchall()
    assert sorted((r[1], r[2]) for r in reports if r[0] == "value") == sorted(
        (e["nulled"], row["appmetrica_device_id"]) for _c, row, e in nulled
    )
    assert sum(1 for r in reports if r[0] == "record") == 4
    assert all(r[4] and r[5] for r in reports)
    log_row = dwh_conn.execute(
        "SELECT status, rows_rejected, values_nulled, values_repaired, error FROM load_log"
    ).fetchone()
    assert log_row == ("loaded", 4, 3, 2, None)
    assert "Mos\x00cow" not in caplog.text and "１７０９" not in caplog.text
