"""Real export lines written by others (tests/fixtures/real_world/README.md says where each
comes from), loaded through the real loader: every value lands as the mapping says or is
reported in load_rejects; nothing disappears silently."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from dwh_helper.catalogue.appmetrica import RESOURCES
from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.appmetrica import load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import LoadError
from tests.dirty_cases import DAY, archive

pytestmark = [pytest.mark.db, pytest.mark.s3]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_world"
SOURCES = sorted(FIXTURES.glob("amplitude_*.jsonl"))


def test_at_least_20_amplitude_events_from_3_sources_are_kept():
    events = [line for path in SOURCES for line in path.read_text().splitlines() if line]
    assert len(events) >= 20 and len(SOURCES) >= 3
    provenance = (FIXTURES / "README.md").read_text()
    assert all(path.name in provenance for path in FIXTURES.glob("*.json*"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_real_amplitude_lines_land_as_mapped_or_reported(store, repo, dwh_conn, path):
    lines = [line.encode() for line in path.read_text().splitlines() if line]
    events = [json.loads(line) for line in lines]
    key = f"raw/amplitude/web/real/{path.stem}.zip"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=archive(lines))
    result = load_amplitude_file(store, key, repo)
    assert result.rows_read == len(events) and result.rejected == 0
    rows = {
        r[0]: r[1:]
        for r in dwh_conn.execute(
            "SELECT uuid::text, event_type, user_id, event_time, device_id FROM events_part"
        )
    }
    assert set(rows) == {e["uuid"] for e in events}  # nothing disappeared
    reported = {
        (r[0], r[1], r[2]): r[3]
        for r in dwh_conn.execute(
            "SELECT record_id, table_name, column_name, value FROM load_rejects "
            "WHERE kind = 'value'"
        )
    }
    assert result.values_nulled == len(reported)
    for event in events:
        event_type, user_id, event_time, device_id = rows[event["uuid"]]
        assert event_type == event["event_type"] and device_id == event["device_id"]
        assert event_time.isoformat(sep=" ").startswith(event["event_time"][:19].replace("T", " "))
        source_user = event.get("user_id")
        if source_user is None:
            assert user_id is None
        elif str(source_user).isdigit():
            assert user_id == int(source_user)
        else:  # a UUID or an e-mail: NULL, and reported with the value
            assert user_id is None
            assert reported[(event["uuid"], "events_part", "user_id")] == source_user
    props = dict(
        dwh_conn.execute("SELECT uuid::text, event_properties_json FROM tmp_event_properties")
    )
    for event in events:
        assert props[event["uuid"]] == (event.get("event_properties") or None) or (
            props[event["uuid"]] == {} and event.get("event_properties") == {}
        )


@pytest.mark.parametrize("resource", ["events", "sessions_starts"])
def test_real_appmetrica_rows_land_as_mapped_or_reported(store, repo, dwh_conn, resource):
    body = (FIXTURES / f"appmetrica_{resource}_yandex_docs.json").read_bytes()
    row = json.loads(body)["data"][0]
    key = raw_key("1111", resource, DAY, "json")
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    result = load_appmetrica_file(store, key, repo)
    assert result.rejected == 0 and result.inserted == {resource: 1}
    # the documented example leaves its datetimes as the placeholder text: stored NULL, reported
    placeholders = sorted(name for name, value in row.items() if value == "yyyy-mm-dd hh:mm:ss")
    reported = dwh_conn.execute(
        "SELECT column_name, value FROM load_rejects WHERE kind = 'value' ORDER BY column_name"
    ).fetchall()
    assert reported == [(name, "yyyy-mm-dd hh:mm:ss") for name in placeholders]
    stored = dwh_conn.execute(
        f"SELECT appmetrica_device_id, os_name, city, {placeholders[0]} FROM appmetrica.{resource}"
    ).fetchone()
    assert stored == (int(row["appmetrica_device_id"]), row["os_name"], row["city"], None)


# -- AppMetrica Logs API files from other projects' repositories (README.md: where from) --------

REAL_APPMETRICA_CSV = {
    "appmetrica_installations_tranminhhoang.csv": ("installations", "1111"),
    "appmetrica_events_archfa_funnel.csv": ("events", "1111"),
    "appmetrica_events_spectrecom_33_fields.csv": ("events", "4415956"),
    "appmetrica_events_spectrecom_5_fields.csv": ("events", "1111"),
}


def _expected_value(kind: str, raw: str) -> object:
    """A raw Logs API value as PostgreSQL should give it back, by the catalogue's kind (the
    rules of docs/appmetrica.md, written here without the loader's code)."""
    if raw == "":
        return None
    if kind == "timestamp":
        return datetime.fromisoformat(raw)
    if kind == "unix_seconds":
        return datetime.fromtimestamp(int(raw), UTC)
    if kind in ("bigint", "uint64"):
        return int(raw)
    if kind == "boolean":
        return raw in ("true", "1")
    if kind == "json":
        return _comparable(json.loads(raw))
    return raw


def _comparable(value: object) -> object:
    """A stored value as `_expected_value` gives it: JSON as sorted text, numerics as int."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return int(value) if isinstance(value, Decimal) else value


@pytest.mark.parametrize("name", sorted(REAL_APPMETRICA_CSV))
def test_real_appmetrica_csv_lands_row_for_row(store, repo, dwh_conn, name):
    resource, application_id = REAL_APPMETRICA_CSV[name]
    body = (FIXTURES / name).read_bytes()
    with io.StringIO(body.decode("utf-8-sig"), newline="") as text:
        header, *rows = list(csv.reader(text))
    kinds = RESOURCES[resource].kinds
    columns = [column for column in header if column in kinds]
    expected = {
        tuple(_expected_value(kinds[column], row[header.index(column)]) for column in columns)
        for row in rows
    }
    key = raw_key(application_id, resource, DAY, "csv")
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    result = load_appmetrica_file(store, key, repo)
    assert (result.rows_read, result.rejected, result.values_nulled) == (len(rows), 0, 0)
    stored = [
        tuple(map(_comparable, row))
        for row in dwh_conn.execute(
            sql.SQL("SELECT {} FROM appmetrica.{}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(resource)
            )
        )
    ]
    # every value as published; rows that repeat exactly (these files lack an identity field,
    # so a row's key is all of its values) are stored once
    assert set(stored) == expected and len(stored) == len(expected)
    assert result.inserted == {resource: len(expected)}


def _refused(store, repo, dwh_conn, key: str, body: bytes, reason: str) -> None:
    """Loading `body` at `key` is a LoadError matching `reason` and stores no event."""
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    with pytest.raises(LoadError, match=reason):
        load_appmetrica_file(store, key, repo)
    assert dwh_conn.execute("SELECT count(*) FROM appmetrica.events").fetchone() == (0,)


def test_a_real_file_under_another_applications_key_loads_nothing(store, repo, dwh_conn):
    # every record of this export names application 4415956: under 1111's key it is refused
    body = (FIXTURES / "appmetrica_events_spectrecom_33_fields.csv").read_bytes()
    key = raw_key("1111", "events", DAY, "csv")
    reason = "application_id: the record is another application's"
    _refused(store, repo, dwh_conn, key, body, reason)


def test_a_real_json_answer_cut_by_hand_is_refused_and_loads_once_mended(store, repo, dwh_conn):
    # as published, the answer keeps a comma after its last item: not JSON, so not a day's data
    published = (FIXTURES / "appmetrica_events_dwh_helper_readme.json").read_bytes()
    key = raw_key("4777504", "events", DAY, "json")
    _refused(store, repo, dwh_conn, key, published, "a comma after the last item of the data array")
    # without that comma it is the API's answer: installation_id twice in every item (it was
    # requested twice), event_json a string of JSON with Cyrillic, a 20-digit device id
    mended = published.replace(b"},\n]", b"}\n]")
    items = json.loads(mended)["data"]
    store.client.put_object(Bucket=store.bucket, Key=key, Body=mended)
    result = load_appmetrica_file(store, key, repo)
    assert (result.rows_read, result.rejected, result.inserted) == (2, 0, {"events": 2})
    stored = dwh_conn.execute(
        "SELECT appmetrica_device_id, installation_id, session_id, event_name, event_json, "
        "city, operator_name FROM appmetrica.events ORDER BY event_datetime"
    ).fetchall()
    assert stored == [
        (
            Decimal(item["appmetrica_device_id"]),
            item["installation_id"],
            int(item["session_id"]),
            item["event_name"],
            json.loads(item["event_json"]),
            None,  # "" is NULL
            None,
        )
        for item in items
    ]
