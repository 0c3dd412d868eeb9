"""Dirty user-property records of issue 12, shared by the pipeline and DAG tests.

Good raw events (50 people, every event changing the person's age) and one event per
dirty case, each with what it must cost as docs/mappings.md documents for user properties: a
repair (NUL removed, counted), a NULL and a value report, or the record.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import psycopg

GOOD = 250
T0 = datetime(2024, 3, 2, 10, 0, 0)
DEEP = "[" * 5000 + "]" * 5000


def record_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def good_event(n: int) -> dict:
    """Good event n: person 1000 + n % 50, age 20 + n (a new state every event)."""
    return {
        "uuid": record_id(n),
        "event_time": (T0 + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "language": "Russian" if n % 2 else "English",
        "session_id": 1000 + n,
        "start_version": "5.1.0",
        "event_type": "screen_view",
        "user_properties": {
            "EHR_ID": str(1000 + n % 50),
            "Gender": "Female" if n % 3 else "Male",
            "age": str(20 + n),
            "cohort_day": n % 7,
        },
    }


def _person(n: int, **props) -> dict:
    event = good_event(n)
    event["user_properties"] = {"EHR_ID": str(5000 + n), "age": "30", **props}
    return event


def dirty_cases() -> list[tuple[str, bytes, dict]]:
    """(case, raw line, expectation): `repaired` (column, stored value), `nulled` (table,
    column) or `rejected` (the column named), for events numbered from 10,001."""
    cases: list[tuple[str, dict | bytes, dict]] = []
    n = 10_000

    def add(case: str, event: dict | bytes, expect: dict) -> None:
        cases.append((case, event, {"uuid": record_id(n), **expect}))

    n += 1
    event = _person(n)
    event["language"] = "Rus\x00sian"
    add("NUL in a text field", event, {"repaired": ("language", "Russian")})
    n += 1
    add(
        "NUL in a JSON property",
        _person(n, Gender="Fe\x00male"),
        {"repaired": ("gender", "female")},
    )
    n += 1
    event = _person(n, source="a\x00b", EHR_ID="x")
    event["uuid"] = "not-a-uuid"
    add("NUL in a rejected record", event, {"rejected": "ehr_id", "uuid": "not-a-uuid"})
    for form in ("2022-W46-1", "2022-11-14 00:57:32,668", "2022-11-14T00"):
        n += 1
        event = _person(n)
        event["event_time"] = form
        add(f"event_time {form}", event, {"rejected": "event_time"})
    n += 1
    text = json.dumps(_person(n)).replace('"age": "30"', '"age": "30", "cohort_day": 1e999999')
    add(
        "huge JSON number",
        text.encode(),
        {"nulled": ("permanent_user_properties", "cohort_day")},
    )
    n += 1
    text = json.dumps({**_person(n), "event_properties": 0})
    text = text.replace('"event_properties": 0', '"event_properties": {"deep": ' + DEEP + "}")
    add("deep JSON in a field the ETL does not read", text.encode(), {"loaded": True})
    n += 1
    text = json.dumps(_person(n)).replace('"age": "30"', '"age": "30", "deep": ' + DEEP)
    add("deep JSON in the user properties", text.encode(), {"rejected": "user_properties"})
    for case, ehr in (
        ("non-numeric EHR id (a uuid)", "84141a73-5ed4-4a0c-9c1d-4c2f6f5b2b11"),
        ("non-numeric EHR id (an e-mail)", "someone@example.com"),
        ("EHR id with a space", " 12"),
        ("full-width digits in the EHR id", "５０９０７１"),
    ):
        n += 1
        add(case, _person(n, EHR_ID=ehr), {"rejected": "ehr_id"})
    n += 1
    add(
        "full-width digits in the age",
        _person(n, age="５０"),
        {"nulled": ("changeable_user_properties", "age")},
    )
    return [
        (case, raw if isinstance(raw, bytes) else json.dumps(raw).encode(), expect)
        for case, raw, expect in cases
    ]


SECRET_VALUES = ("84141a73", "someone@example.com", "５０９０７１", "Fe\x00male", "a\x00b")
"""Raw values of the dirty records that must never reach a log line or an error message."""


def dirty_lines() -> tuple[list[dict], list[tuple[str, bytes, dict]], list[bytes]]:
    """The good events, the dirty cases, and the file's lines (dirty ones spread among the good)."""
    good = [good_event(n) for n in range(1, GOOD + 1)]
    dirty = dirty_cases()
    lines = [json.dumps(event, ensure_ascii=False).encode() for event in good]
    for offset, (_case, raw, _expect) in enumerate(dirty):
        lines.insert(13 * (offset + 1), raw)
    return good, dirty, lines


def check_good_records(conn: psycopg.Connection, good: list[dict]) -> None:
    """Every good event's changeable row exact, and each person's permanent row from their
    first event."""
    rows = {
        str(row[0]): row[1:]
        for row in conn.execute(
            "SELECT uuid, ehr_id, event_time, language, age, session_id, start_version "
            "FROM changeable_user_properties"
        )
    }
    for event in good:
        assert rows[event["uuid"]] == (
            int(event["user_properties"]["EHR_ID"]),
            datetime.fromisoformat(event["event_time"]),
            event["language"],
            int(event["user_properties"]["age"]),
            event["session_id"],
            "5.1.0",
        ), event["uuid"]
    permanent = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT ehr_id, first_login_at, gender, cohort_day FROM permanent_user_properties"
        )
    }
    firsts: dict[int, dict] = {}
    for event in good:
        firsts.setdefault(int(event["user_properties"]["EHR_ID"]), event)
    for person, event in firsts.items():
        props = event["user_properties"]
        assert permanent[person] == (
            datetime.fromisoformat(event["event_time"]),
            props["Gender"].lower(),
            props["cohort_day"],
        )


def check_dirty_records(conn: psycopg.Connection, dirty: list, key: str | None) -> None:
    """Each dirty event repaired, NULL-and-reported or rejected, exactly as documented."""
    changeable = {
        str(row[0]): row[1:]
        for row in conn.execute(
            "SELECT uuid, ehr_id, language, age FROM changeable_user_properties "
            "WHERE ehr_id >= 5000 OR ehr_id IS NULL"
        )
    }
    reports = conn.execute(
        "SELECT kind, record_id, table_name, column_name, value, reason, s3_key, line, raw "
        "FROM load_rejects WHERE source = 'user_properties' ORDER BY line, column_name"
    ).fetchall()
    values = {(r[1], r[2], r[3]) for r in reports if r[0] == "value"}
    records = {r[1]: r for r in reports if r[0] == "record"}
    expected_rejected = [e for _c, _r, e in dirty if "rejected" in e]
    assert len(records) == len(expected_rejected), records.keys()
    for case, _raw, expect in dirty:
        if "rejected" in expect:
            assert expect["uuid"] not in changeable, case
            reject = records[expect["uuid"]]
            assert reject[3] == expect["rejected"] and expect["rejected"] in reject[5], case
            assert reject[6] == key and (key is None or reject[7]), case
        else:
            assert expect["uuid"] in changeable, case
        if "nulled" in expect:
            assert (expect["uuid"], *expect["nulled"]) in values, case
    assert len(values) == sum("nulled" in e for _c, _r, e in dirty)
    by_case = {case: expect for case, _r, expect in dirty}
    assert changeable[by_case["NUL in a text field"]["uuid"]][1] == "Russian"
    assert changeable[by_case["full-width digits in the age"]["uuid"]][2] is None
    gender = conn.execute(
        "SELECT gender FROM permanent_user_properties WHERE ehr_id = %s",
        (int(5000 + 10_002),),
    ).fetchone()
    assert gender == ("female",)
    nul_reject = records["not-a-uuid"]
    if key is not None:  # the raw event is kept for S3 lines: the NUL shown, not lost
        assert nul_reject[8]["event"]["user_properties"]["source"] == "a\\u0000b"
