"""Real export lines written by others (tests/fixtures/real_world/README.md says where each
comes from), loaded through the real loader: every value lands as the mapping says or is
reported in load_rejects; nothing disappears silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.appmetrica import load_appmetrica_file, raw_key
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
