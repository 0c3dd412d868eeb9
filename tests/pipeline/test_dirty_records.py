"""Issue 12: a bad value costs a value, a bad record costs a record — never a file.

For Amplitude (ZIP) and AppMetrica (CSV and JSON): a file of good records plus one record per
dirty case goes through the real loader into the real PostgreSQL from moto's S3. Each dirty
record is loaded with a repair, loaded with a NULL and a report, or rejected — as
docs/mappings.md documents — the good records load exactly, load_log counts match, and no raw
row text reaches load_log.error or the log. Also: a PostgreSQL data error forced past the value
layer is recovered row by row (the last line of defence).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import zipfile
from collections import Counter
from datetime import UTC, date, datetime

import psycopg
import pytest

from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.appmetrica import day_window, load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import LoadError, as_load_error
from dwh_helper.sandbox.amplitude_events import generate_hour
from dwh_helper.sandbox.appmetrica import generate_rows
from dwh_helper.storage.s3 import ObjectReadError, ObjectStore
from dwh_helper.transform.event_mapping import amplitude_mapping

pytestmark = [pytest.mark.db, pytest.mark.s3]

KEY = "raw/amplitude/web/2024/03/02/web_20240302.zip"
ENTRY = "374182/374182_2024-03-02_10#0.json.gz"
GOOD = 400  # 4 rejected of 410 stays under the default 1% reject ratio
DEEP = "[" * 5000 + "]" * 5000


def _archive(lines: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(ENTRY, gzip.compress(b"\n".join(lines) + b"\n"))
    return buffer.getvalue()


def _put(store: ObjectStore, key: str, body: bytes) -> None:
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def amplitude_dirty_cases(base: dict) -> list[tuple[str, bytes, dict]]:
    """(case, raw line, expectation) for every dirty case of the issue, built on a real event."""

    def line(n: int, **changes) -> tuple[dict, bytes]:
        event = {**base, "uuid": _uuid(n), "$insert_id": _uuid(n), **changes}
        return event, json.dumps(event, ensure_ascii=False).encode()

    cases = []

    def add(case: str, expect: dict, n: int, raw: bytes | None = None, **changes) -> None:
        event, data = line(n, **changes)
        cases.append((case, raw or data, {"uuid": event["uuid"], **expect}))

    add("NUL in a text field", {"loaded": True, "repaired": 1}, 1, event_type="sign\x00up")
    add(
        "NUL in a JSON property",
        {"loaded": True, "repaired": 1},
        2,
        event_properties={"note": "a\x00b", "n": 1},
    )
    add("NUL in a rejected record", {"rejected": "uuid"}, 3, uuid="not-a-uuid", city="Mo\x00scow")
    cases[-1][2]["uuid"] = "not-a-uuid"
    for n, form in enumerate(("2022-W46-1", "2022-11-14 00:57:32,668", "2022-11-14T00"), 4):
        add(f"event_time {form}", {"rejected": "event_time"}, n, event_time=form)
    huge = json.dumps({**base, "uuid": _uuid(7), "$insert_id": _uuid(7)})
    huge = huge.replace('"event_properties": {', '"event_properties": {"n": 1e999999, ', 1)
    add(
        "huge JSON number",
        {"loaded": True, "nulled": ("tmp_event_properties", "event_properties_json")},
        7,
        raw=huge.encode(),
    )
    deep = json.dumps({**base, "uuid": _uuid(8), "$insert_id": _uuid(8), "event_properties": 0})
    deep = deep.replace('"event_properties": 0', '"event_properties": {"deep": ' + DEEP + "}", 1)
    add(
        "JSON nested 5,000 deep",
        {"loaded": True, "nulled": ("tmp_event_properties", "event_properties_json")},
        8,
        raw=deep.encode(),
    )
    add(
        "non-numeric user_id",
        {"loaded": True, "nulled": ("events_part", "user_id")},
        9,
        user_id="84141a73-5ed4-4a0c-9c1d-4c2f6f5b2b11",
    )
    add(
        "full-width digits",
        {"loaded": True, "nulled": ("events_part", "user_id")},
        10,
        user_id="５０９０７１",
    )
    return cases


def amplitude_dirty_file() -> tuple[list[dict], list[tuple[str, bytes, dict]], bytes]:
    """400 good generated events plus one per dirty case, as a raw export archive."""
    good = generate_hour(374182, datetime(2024, 3, 2, 10, tzinfo=UTC), 5, GOOD)
    dirty = amplitude_dirty_cases(good[0])
    lines = [json.dumps(event).encode() for event in good]
    for offset, (_case, raw, _expect) in enumerate(dirty):
        lines.insert(37 * (offset + 1), raw)
    return good, dirty, _archive(lines)


def check_amplitude_dirty_load(conn: psycopg.Connection, good: list[dict], dirty: list) -> None:
    """The DWH after loading `amplitude_dirty_file` (once or more): exact, as documented."""
    rejected = [expect for _c, _r, expect in dirty if "rejected" in expect]
    loaded = [expect for _c, _r, expect in dirty if expect.get("loaded")]
    uuids = {row[0] for row in conn.execute("SELECT uuid::text FROM events_part")}
    assert uuids == {e["uuid"] for e in good} | {e["uuid"] for e in loaded}
    # good records exact: their typed values as the source has them
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT uuid::text, event_type, user_id, event_time, session_id FROM events_part"
        )
    }
    for event in good:
        user = event["user_id"]
        expected_user = int(user) if user not in (None, "", "N/A", "-1", -1) else None
        expected_session = None if event["session_id"] in (-1, "-1") else event["session_id"]
        assert rows[event["uuid"]] == (
            event["event_type"],
            expected_user,
            datetime.fromisoformat(event["event_time"]),
            expected_session,
        ), event["uuid"]
    props = dict(conn.execute("SELECT uuid::text, event_properties_json FROM tmp_event_properties"))
    for event in good:
        assert props[event["uuid"]] == event["event_properties"]
    # the dirty ones, each as documented
    assert rows[_uuid(1)][0] == "signup"
    assert props[_uuid(2)] == {"note": "ab", "n": 1}
    for expect in loaded:
        if "nulled" in expect:
            table, column = expect["nulled"]
            value = conn.execute(
                f"SELECT {column} FROM {table} WHERE uuid = %s", (expect["uuid"],)
            ).fetchone()
            assert value == (None,), expect
    reports = conn.execute(
        "SELECT kind, record_id, table_name, column_name, entry, line, s3_key, reason, value "
        "FROM load_rejects ORDER BY line"
    ).fetchall()
    values = {(r[1], r[2], r[3]) for r in reports if r[0] == "value"}
    assert values == {(e["uuid"], *e["nulled"]) for e in loaded if "nulled" in e}, reports
    records = [r for r in reports if r[0] == "record"]
    assert len(records) == len(rejected)
    assert all(r[4] == ENTRY and r[5] and r[6] == KEY for r in reports)
    assert {r[2] and r[3] for r in records} <= {"uuid", "event_time"}
    nul_reject = next(r for r in records if r[1] == "not-a-uuid")
    raw = conn.execute(
        "SELECT raw->>'city' FROM load_rejects WHERE record_id = 'not-a-uuid'"
    ).fetchone()[0]
    assert raw == "Mo\\u0000scow" and "not a uuid" in nul_reject[7]


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
    _put(store, KEY, _archive(lines))
    with caplog.at_level(logging.DEBUG), pytest.raises(LoadError) as caught:
        load_amplitude_file(store, KEY, repo)
    assert not caught.value.retryable
    error = dwh_conn.execute("SELECT error FROM load_log").fetchone()[0]
    assert "events_part.uuid: not a uuid" in error
    assert "secret-ehr-12345" not in error and "secret-ehr-12345" not in str(caught.value)
    assert "secret-ehr-12345" not in caplog.text


# -- the last line of defence ----------------------------------------------------------------


def test_postgres_data_errors_past_the_value_layer_cost_a_row_or_a_value(
    store, repo, dwh_conn, monkeypatch
):
    """Bypass the value layer: the mapping hands PostgreSQL lines it refuses."""
    good = generate_hour(374182, datetime(2024, 3, 2, 12, tzinfo=UTC), 5, 300)
    _put(store, KEY, _archive([json.dumps(e).encode() for e in good]))
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

    object.__setattr__(mapping, "map_record", spoil)
    result = load_amplitude_file(store, KEY, repo, mapping)
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

APP = "1111"
DAY = date(2024, 3, 2)


def appmetrica_rows() -> tuple[list[dict[str, str]], list[tuple[str, dict[str, str], dict]]]:
    """400 generated events rows and one row per dirty case (raw strings, as the API sends)."""
    since, until = day_window(DAY)
    good = list(generate_rows("events", APP, since, until, seed=5, events_per_day=GOOD))[:GOOD]
    base = good[0]

    def row(n: int, **changes: str) -> dict[str, str]:
        return {**base, "appmetrica_device_id": str(10**15 + n), **changes}

    dirty = [
        ("NUL in a text field", row(1, city="Mos\x00cow"), {"repaired": "city"}),
        (
            "NUL in a JSON property",
            row(2, event_json='{"screen":"a\\u0000b"}'),
            {"repaired": "event_json"},
        ),
        (
            "NUL in a rejected record",
            row(3, appmetrica_device_id="abc", city="x\x00y"),
            {"rejected": "appmetrica_device_id"},
        ),
        ("timestamp 2022-11-14T00", row(4, event_timestamp="2022-11-14T00"), {"rejected": "x"}),
        (
            "datetime with a comma fraction",
            row(5, event_datetime="2022-11-14 00:57:32,668"),
            {"nulled": "event_datetime"},
        ),
        (
            "datetime as an ISO week date",
            row(6, event_receive_datetime="2022-W46-1 00:00:0"),
            {"nulled": "event_receive_datetime"},
        ),
        ("huge JSON number", row(7, event_json='{"n": 1e999999}'), {"rejected": "x"}),
        ("deep JSON", row(8, event_json="[" * 5000 + "]" * 5000), {"rejected": "x"}),
        (
            "full-width digits",
            row(9, event_receive_timestamp="１７０９３５１８５３"),
            {"nulled": "event_receive_timestamp"},
        ),
    ]
    return good, dirty


def _appmetrica_body(rows: list[dict[str, str]], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps({"data": rows}, ensure_ascii=False).encode()
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_appmetrica_dirty_file_loads_with_each_dirty_record_as_documented(
    store, repo, dwh_conn, fmt, caplog
):
    good, dirty = appmetrica_rows()
    rows = list(good)
    for offset, (_case, row, _expect) in enumerate(dirty):
        rows.insert(41 * (offset + 1), row)
    key = raw_key(APP, "events", DAY, fmt)
    _put(store, key, _appmetrica_body(rows, fmt))
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
