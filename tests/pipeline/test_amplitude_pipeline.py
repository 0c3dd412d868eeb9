"""extract_amplitude and the Amplitude load against the sandbox, moto's S3 and real PostgreSQL."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import UTC, date, datetime

import pytest

from devtools.sandbox.amplitude import AmplitudeFaults, AmplitudeSandbox
from devtools.sandbox.amplitude_events import generate_hour
from dwh_helper.pipeline.amplitude import (
    archive_key,
    day_keys,
    extract_amplitude,
    load_amplitude_file,
)
from dwh_helper.pipeline.load import LoadError
from dwh_helper.sources.amplitude import AmplitudeClient, ExportWindow
from dwh_helper.storage.s3 import ObjectStore, file_sha256

pytestmark = [pytest.mark.db, pytest.mark.s3]

DAY = date(2024, 3, 2)
EVENT_TABLES = (
    "events_part",
    "technical_data",
    "tmp_event_properties",
    "tmp_user_properties",
    "user_locations",
)


@pytest.fixture
def sandbox():
    with AmplitudeSandbox(seed=3, events_per_hour=8) as server:
        yield server


def _client(sandbox: AmplitudeSandbox, project: str = "web") -> AmplitudeClient:
    chosen = next(p for p in sandbox.projects if p.name == project)
    return AmplitudeClient(
        chosen.api_key,
        chosen.secret_key,
        project=project,
        base_url=sandbox.url,
        sleep=lambda seconds: None,
    )


def _counts(conn) -> dict[str, int]:
    tables = (*EVENT_TABLES, "mobile_devices", "load_rejects")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def _archive(lines_by_entry: dict[str, list[bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, lines in lines_by_entry.items():
            archive.writestr(name, gzip.compress(b"\n".join(lines) + b"\n"))
    return buffer.getvalue()


def _put(store: ObjectStore, key: str, body: bytes) -> None:
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)


def _events(hour: int, count: int) -> list[dict]:
    return generate_hour(374182, datetime(2024, 3, 2, hour, tzinfo=UTC), 5, count)


def test_extract_lands_the_day_unchanged_with_metadata(sandbox, store):
    with _client(sandbox) as client:
        result = extract_amplitude(client, store, "web", DAY)
    window = ExportWindow.for_day(DAY)
    key = archive_key("web", window)
    assert result.keys == [key] == day_keys(store, "web", DAY)
    assert key == "raw/amplitude/web/2024/03/02/web_20240302.zip"
    served = sandbox.archive_bytes("web", window)
    assert store.open(key).read() == served
    info = store.head(key)
    assert info.metadata["window-start"] == "2024-03-02T00:00:00+00:00"
    assert info.metadata["window-end"] == "2024-03-02T23:00:00+00:00"
    assert int(info.metadata["size"]) == len(served) == result.bytes
    import hashlib

    assert info.metadata["sha256"] == hashlib.sha256(served).hexdigest()


def test_extract_rerun_overwrites_and_removes_stale_split_keys(sandbox, store):
    sandbox.faults = AmplitudeFaults(max_window_hours=12)
    with _client(sandbox) as client:
        split = extract_amplitude(client, store, "web", DAY)
    assert [k.rsplit("/", 1)[1] for k in split.keys] == [
        "web_20240302_00-11.zip",
        "web_20240302_12-23.zip",
    ]
    sandbox.faults = AmplitudeFaults()
    with _client(sandbox) as client:
        whole = extract_amplitude(client, store, "web", DAY)
    assert (
        day_keys(store, "web", DAY)
        == whole.keys
        == ["raw/amplitude/web/2024/03/02/web_20240302.zip"]
    )


def test_extract_empty_day_lands_nothing(sandbox, store):
    sandbox.faults = AmplitudeFaults(empty_days={DAY})
    with _client(sandbox) as client:
        result = extract_amplitude(client, store, "web", DAY)
    assert result.keys == [] and result.empty_hours == 24
    assert day_keys(store, "web", DAY) == []


def test_load_counts_match_the_sandbox_and_a_second_load_changes_nothing(
    sandbox, store, repo, dwh_conn
):
    with _client(sandbox) as client:
        (key,) = extract_amplitude(client, store, "web", DAY).keys
    events = list(sandbox.events("web", ExportWindow.for_day(DAY)))
    result = load_amplitude_file(store, key, repo)
    devices = {e["device_id"] for e in events if e.get("device_id")}
    assert result.rows_read == len(events)
    assert result.inserted == {
        "mobile_devices": len(devices),
        **{table: len(events) for table in EVENT_TABLES},
    }
    counts = _counts(dwh_conn)
    again = load_amplitude_file(store, key, repo)
    assert sum(again.inserted.values()) == 0
    assert _counts(dwh_conn) == counts
    assert dwh_conn.execute(
        "SELECT status, rows_read, rows_inserted->>'events_part', window_start FROM load_log "
        "ORDER BY id"
    ).fetchall() == [
        ("loaded", len(events), str(len(events)), datetime(2024, 3, 2, tzinfo=UTC)),
        ("loaded", len(events), "0", datetime(2024, 3, 2, tzinfo=UTC)),
    ]


def test_bad_records_go_to_rejects_with_entry_line_and_reason(store, repo, dwh_conn):
    good = _events(0, 300)
    bad_uuid = {**good[0], "uuid": "not-a-uuid"}
    no_time = {k: v for k, v in good[1].items() if k != "event_time"}
    big_user = {**good[2], "uuid": "00000000-0000-0000-0000-00000000beef", "user_id": "12abc"}
    lines = [json.dumps(e).encode() for e in good[3:]]
    lines[10:10] = [b"{not json", json.dumps(bad_uuid).encode()]
    lines.append(json.dumps(no_time).encode())
    lines.append(json.dumps(big_user).encode())
    entry = "374182/374182_2024-03-02_0#0.json.gz"
    _put(store, "raw/amplitude/web/bad.zip", _archive({entry: lines}))

    result = load_amplitude_file(store, "raw/amplitude/web/bad.zip", repo, reject_ratio=0.05)
    assert result.rows_read == len(lines) and result.rejected == 3
    assert result.values_nulled == 1
    assert result.inserted["events_part"] == len(lines) - 3
    rejects = dwh_conn.execute(
        "SELECT s3_key, entry, line, reason, record_id, raw, kind, table_name, column_name, "
        "value FROM load_rejects ORDER BY line"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[6]) for r in rejects] == [
        ("raw/amplitude/web/bad.zip", entry, 11, "record"),
        ("raw/amplitude/web/bad.zip", entry, 12, "record"),
        ("raw/amplitude/web/bad.zip", entry, len(lines) - 1, "record"),
        ("raw/amplitude/web/bad.zip", entry, len(lines), "value"),
    ]
    reasons = [r[3] for r in rejects]
    assert "not valid JSON" in reasons[0]
    assert "uuid" in reasons[1] and "not a uuid" in reasons[1]
    assert "event_time: missing" in reasons[2]
    assert "user_id: not an integer" in reasons[3] and "stored NULL" in reasons[3]
    assert rejects[0][5] == {"unparsed_line": "{not json"}
    assert rejects[3][4] == "00000000-0000-0000-0000-00000000beef"
    assert rejects[3][7:] == ("events_part", "user_id", "12abc")
    # the event itself loaded, user_id NULL
    assert dwh_conn.execute(
        "SELECT user_id FROM events_part WHERE uuid = '00000000-0000-0000-0000-00000000beef'"
    ).fetchall() == [(None,)]
    assert dwh_conn.execute("SELECT values_nulled FROM load_log").fetchone() == (1,)


def test_too_many_rejects_fail_the_file_and_load_nothing(store, repo, dwh_conn):
    lines = [json.dumps(e).encode() for e in _events(1, 50)] + [b"garbage"] * 2
    _put(
        store,
        "raw/amplitude/web/mostly-ok.zip",
        _archive({"374182/374182_2024-03-02_1#0.json.gz": lines}),
    )
    with pytest.raises(LoadError, match=r"raw/amplitude/web/mostly-ok.zip: 2 of 52 records"):
        load_amplitude_file(store, "raw/amplitude/web/mostly-ok.zip", repo)
    assert _counts(dwh_conn) == dict.fromkeys((*EVENT_TABLES, "mobile_devices", "load_rejects"), 0)
    status, error = dwh_conn.execute("SELECT status, error FROM load_log").fetchone()
    assert status == "failed" and "ETL_REJECT_RATIO" in error


def test_corrupt_archive_fails_naming_the_key_and_leaves_no_rows(store, repo, dwh_conn):
    first = gzip.compress(b"\n".join(json.dumps(e).encode() for e in _events(2, 40)))
    second = gzip.compress(b"\n".join(json.dumps(e).encode() for e in _events(3, 40)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("374182/374182_2024-03-02_2#0.json.gz", first)
        archive.writestr("374182/374182_2024-03-02_3#0.json.gz", second[: len(second) // 2])
    _put(store, "raw/amplitude/web/corrupt.zip", buffer.getvalue())
    with pytest.raises(LoadError) as error:
        load_amplitude_file(store, "raw/amplitude/web/corrupt.zip", repo, batch_size=10)
    assert "raw/amplitude/web/corrupt.zip" in str(error.value)
    assert "2024-03-02_3#0" in str(error.value)
    assert _counts(dwh_conn) == dict.fromkeys((*EVENT_TABLES, "mobile_devices", "load_rejects"), 0)

    _put(store, "raw/amplitude/web/not-a-zip.zip", b"<html>rate limited</html>")
    with pytest.raises(LoadError, match="raw/amplitude/web/not-a-zip.zip: corrupt file"):
        load_amplitude_file(store, "raw/amplitude/web/not-a-zip.zip", repo)


def test_months_seen_get_their_partition_after_the_load(store, repo, dwh_conn):
    events = _events(4, 20)
    late = {
        **events[0],
        "uuid": "11111111-2222-3333-4444-555555555555",
        "event_time": "2023-11-30 23:59:59",
    }
    lines = [json.dumps(e).encode() for e in [*events, late]]
    _put(
        store,
        "raw/amplitude/web/late.zip",
        _archive({"374182/374182_2024-03-02_4#0.json.gz": lines}),
    )
    load_amplitude_file(store, "raw/amplitude/web/late.zip", repo)
    placement = dict(
        dwh_conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM events_part GROUP BY 1"
        ).fetchall()
    )
    expected: dict[str, int] = {}
    for event in [*events, late]:
        name = "events_part_" + event["event_time"][:7].replace("-", "")
        expected[name] = expected.get(name, 0) + 1
    assert placement == expected
    assert expected["events_part_202311"] == 1


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "x"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
