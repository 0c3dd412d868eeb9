"""Dirty-record files of issue 12, shared by the pipeline, fast-path and DAG tests.

One record per dirty case of the issue, next to good generated records, with what each must
cost (a repair, a NULL and a report, or the record), as docs/mappings.md documents.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from datetime import UTC, date, datetime

import psycopg

from devtools.sandbox.amplitude_events import generate_hour
from devtools.sandbox.appmetrica import generate_rows
from dwh_helper.pipeline.appmetrica import day_window

KEY = "raw/amplitude/web/2024/03/02/web_20240302.zip"
ENTRY = "374182/374182_2024-03-02_10#0.json.gz"
GOOD = 400  # 4 rejected of 410 stays under the default 1% reject ratio
DEEP = "[" * 5000 + "]" * 5000


def archive(lines: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(ENTRY, gzip.compress(b"\n".join(lines) + b"\n"))
    return buffer.getvalue()


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
    return good, dirty, archive(lines)


def check_amplitude_dirty_load(
    conn: psycopg.Connection, good: list[dict], dirty: list, key: str = KEY
) -> None:
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
    assert all(r[4] == ENTRY and r[5] and r[6] == key for r in reports)
    assert {r[2] and r[3] for r in records} <= {"uuid", "event_time"}
    nul_reject = next(r for r in records if r[1] == "not-a-uuid")
    raw = conn.execute(
        "SELECT raw->>'city' FROM load_rejects WHERE record_id = 'not-a-uuid'"
    ).fetchone()[0]
    assert raw == "Mo\\u0000scow" and "not a uuid" in nul_reject[7]


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


def appmetrica_body(rows: list[dict[str, str]], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps({"data": rows}, ensure_ascii=False).encode()
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
