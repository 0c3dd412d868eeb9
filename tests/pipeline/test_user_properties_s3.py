"""migrate_user_properties over raw files in S3 (moto's server) with resume by line."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devtools.sandbox.amplitude_events import generate_hour, write_archive
from dwh_helper.pipeline.user_properties import (
    REJECT_SOURCE,
    MigrationInterrupted,
    migrate_user_properties,
)
from dwh_helper.storage.s3 import ObjectNotFound

pytestmark = [pytest.mark.db, pytest.mark.s3]

T0 = datetime(2024, 3, 1, 10, 0, 0)
KEY = "raw/amplitude/web/2024/03/01/events.ndjson"


def event(n: int, props: dict) -> dict:
    """A raw Amplitude event (only the fields the step reads, plus noise)."""
    return {
        "uuid": str(uuid.UUID(int=n)),
        "event_time": (T0 + timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "language": "Russian",
        "session_id": -1 if n % 3 == 0 else 1000 + n,
        "start_version": "5.1",
        "event_type": "screen_view",
        "user_properties": props,
    }


def events(count: int) -> list[dict]:
    return [
        event(n, {"EHR_ID": str(n % 4), "age": 20 + (n // 5) % 3, "Gender": "Female"})
        for n in range(1, count + 1)
    ]


def ndjson(rows: list[dict | str]) -> bytes:
    return b"".join(
        (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode() + b"\n"
        for row in rows
    )


def put(store, key: str, body: bytes) -> None:
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("permanent_user_properties", "changeable_user_properties")
    } | {
        "rejects": conn.execute(
            "SELECT source, s3_key, record_id, entry, line, reason FROM load_rejects ORDER BY line"
        ).fetchall()
    }


def reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE permanent_user_properties, changeable_user_properties, load_rejects")


def test_ndjson_file_with_bad_lines(repo, dwh_conn, store):
    rows: list[dict | str] = [
        *events(12),
        "{not json",
        "",
        event(13, {"EHR_ID": "1", "age": "old"}),
        "[1, 2]",
    ]
    put(store, KEY, ndjson(rows))
    result = migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=5)
    assert (result.processed, result.rejected, result.last_line) == (13, 2, 15)
    assert result.values_nulled == 1
    assert (result.key, result.status, result.failed_line) == (KEY, "completed", None)
    assert result.batches == 3
    assert dwh_conn.execute("SELECT count(*) FROM permanent_user_properties").fetchone() == (4,)
    rejects = dwh_conn.execute(
        "SELECT source, s3_key, record_id, line, kind, reason, raw FROM load_rejects ORDER BY line"
    ).fetchall()
    assert [row[:5] for row in rejects] == [
        (REJECT_SOURCE, KEY, None, 13, "record"),
        (REJECT_SOURCE, KEY, str(uuid.UUID(int=13)), 14, "value"),  # age 'old' stored NULL
        (REJECT_SOURCE, KEY, None, 15, "record"),
    ]
    assert "not JSON" in rejects[0][5]
    assert "age='old'" in rejects[1][5]
    assert "not a JSON object" in rejects[2][5]
    # session -1 → null, the event's own fields reach the changeable row
    assert dwh_conn.execute(
        "SELECT session_id, language FROM changeable_user_properties WHERE uuid = %s",
        (uuid.UUID(int=3),),
    ).fetchone() == (None, "Russian")

    again = migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=5)
    assert (again.processed, again.rejected, again.rejected_before) == (13, 2, 2)
    assert (again.permanent_inserted, again.changeable_inserted) == (0, 0)
    assert dwh_conn.execute("SELECT count(*) FROM load_rejects").fetchone() == (3,)


def test_start_after_skips_the_lines_already_done(repo, dwh_conn, store):
    put(store, KEY + ".gz", gzip.compress(ndjson(events(20))))
    result = migrate_user_properties(
        repo, source="s3", store=store, key=KEY + ".gz", start_after=15, batch_size=3
    )
    assert (result.processed, result.start_after, result.last_line) == (5, 15, 20)
    assert [
        row[0].int
        for row in dwh_conn.execute("SELECT uuid FROM changeable_user_properties ORDER BY uuid")
    ] == [16, 17, 18, 19, 20]
    nothing = migrate_user_properties(
        repo, source="s3", store=store, key=KEY + ".gz", start_after=20
    )
    assert (nothing.processed, nothing.batches, nothing.last_line) == (0, 0, 20)


def test_amplitude_zip_archive_counts_lines_across_entries(repo, dwh_conn, store):
    hours = [datetime(2024, 3, 2, h, tzinfo=UTC) for h in (0, 1)]
    buffer = io.BytesIO()
    written = write_archive(
        buffer,
        374182,
        [(hour, generate_hour(374182, hour, seed=3, count=60)) for hour in hours],
        events_per_part=25,
    )
    key = "raw/amplitude/web/2024/03/02/374182_2024-03-02.zip"
    put(store, key, buffer.getvalue())
    full = migrate_user_properties(repo, source="s3", store=store, key=key, batch_size=40)
    assert full.processed + full.rejected == written == 120
    assert full.last_line == 120 and full.batches == 3
    assert full.unknown_keys.get("Ehr Count", 0) > 0
    entries = dwh_conn.execute(
        "SELECT DISTINCT entry FROM load_rejects WHERE s3_key = %s", (key,)
    ).fetchall()
    assert all(entry[0].startswith("374182/374182_2024-03-02_") for entry in entries)
    expected = snapshot(dwh_conn)

    reset(dwh_conn)
    first = migrate_user_properties(
        repo, source="s3", store=store, key=key, start_after=0, batch_size=70
    )
    assert first.last_line == 120
    assert snapshot(dwh_conn) == expected


def test_failure_in_batch_two_then_resume_from_last_line(repo, dwh_conn, store):
    rows: list[dict | str] = [*events(25), "{bad"]
    put(store, KEY, ndjson(rows))
    migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=10)
    expected = snapshot(dwh_conn)
    reset(dwh_conn)

    dwh_conn.execute(
        """CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.uuid = '00000000-0000-0000-0000-00000000000f' THEN
        RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON changeable_user_properties
        FOR EACH ROW EXECUTE FUNCTION boom();"""
    )
    with pytest.raises(MigrationInterrupted, match="start_after=10") as info:
        migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=10)
    partial = info.value.result
    assert (partial.status, partial.last_line, partial.failed_line) == ("interrupted", 10, 11)
    assert partial.key == KEY and "injected failure" in partial.error
    assert dwh_conn.execute("SELECT max(event_time) FROM changeable_user_properties").fetchone()[
        0
    ] <= T0 + timedelta(minutes=10)

    dwh_conn.execute("DROP TRIGGER boom ON changeable_user_properties")
    resumed = migrate_user_properties(
        repo, source="s3", store=store, key=KEY, batch_size=10, start_after=partial.last_line
    )
    assert (resumed.processed, resumed.rejected, resumed.last_line) == (15, 1, 26)
    assert snapshot(dwh_conn) == expected


def test_truncated_gzip_reports_the_failing_line_and_keeps_the_lines_before(repo, dwh_conn, store):
    body = gzip.compress(ndjson(events(400)))
    put(store, KEY + ".gz", body[: len(body) // 2])
    with pytest.raises(MigrationInterrupted, match=KEY) as info:
        migrate_user_properties(repo, source="s3", store=store, key=KEY + ".gz", batch_size=1000)
    partial = info.value.result
    assert 0 < partial.last_line < 400
    assert partial.failed_line == partial.last_line + 1
    assert partial.processed == partial.last_line
    assert dwh_conn.execute("SELECT count(*) FROM changeable_user_properties").fetchone()[0] > 0


def test_nul_characters_and_missing_objects(repo, dwh_conn, store):
    put(
        store,
        KEY,
        ndjson(
            [
                event(1, {"EHR_ID": "1", "source": "bad\u0000value"}),
                event(2, {"EHR_ID": "x\u0000", "source": "a\u0000b"}),
            ]
        ),
    )
    result = migrate_user_properties(repo, source="s3", store=store, key=KEY)
    assert (result.processed, result.rejected, result.values_repaired) == (1, 1, 1)
    assert dwh_conn.execute("SELECT source FROM permanent_user_properties").fetchall() == [
        ("badvalue",)
    ]
    raw = dwh_conn.execute("SELECT raw FROM load_rejects").fetchone()[0]
    assert raw["errors"][0]["key"] == "EHR_ID" and raw["errors"][0]["value"] == "x\\u0000"
    assert raw["event"]["user_properties"]["source"] == "a\\u0000b"
    with pytest.raises(ObjectNotFound):
        migrate_user_properties(repo, source="s3", store=store, key="raw/missing.zip")
