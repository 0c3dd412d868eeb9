"""The appmetrica schema: migration 2, typed tables, deterministic row_uuid, idempotent loads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from psycopg import sql

from devtools.sandbox.appmetrica import AppMetricaSandbox, write_events_file
from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS
from dwh_helper.dwh.appmetrica_schema import (
    APPMETRICA_TABLES,
    IDENTITY_FIELDS,
    appmetrica_table,
    create_appmetrica_schema,
)
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.schema import migrate
from dwh_helper.transform.appmetrica_formatter import CastError
from tests.support.appmetrica_oracle import (
    RowConverter,
    cast_record,
    iter_records,
    row_uuid,
    to_row,
)

DAY = (datetime(2024, 3, 1), datetime(2024, 3, 1, 23, 59, 59))


def columns(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'appmetrica' AND c.relname = %s AND a.attnum > 0 "
        "AND NOT a.attisdropped",
        (table,),
    ).fetchall()
    return dict(rows)


@pytest.mark.db
def test_migration_creates_the_typed_tables_and_is_idempotent(empty_dsn):
    with open_connection(empty_dsn) as conn:
        applied = migrate(conn)
        assert 2 in applied
        assert migrate(conn) == []
        create_appmetrica_schema(conn)  # running the step again changes nothing
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert sorted(versions).count(2) == 1
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'appmetrica'"
            )
        }
        assert tables == {"events", "installations", "sessions_starts"}
        events = columns(conn, "events")
        assert (
            len(events) == len(DEFAULT_FIELDS["events"]) + 1
        )  # + row_uuid (application_id is a field)
        assert events["row_uuid"] == "uuid"
        assert events["application_id"] == "bigint"
        assert events["event_timestamp"] == "timestamp with time zone"
        assert events["event_receive_timestamp"] == "timestamp with time zone"
        assert events["event_datetime"] == "timestamp without time zone"
        assert events["session_id"] == "bigint"
        assert events["appmetrica_device_id"] == "numeric(20,0)"
        assert events["event_json"] == "jsonb"
        assert events["city"] == "text"
        installs = columns(conn, "installations")
        assert installs["is_reinstallation"] == "boolean"
        assert installs["tracking_id"] == "bigint"
        assert columns(conn, "sessions_starts")["session_start_timestamp"] == (
            "timestamp with time zone"
        )
        key = conn.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'appmetrica.events'::regclass AND i.indisprimary"
        ).fetchone()[0]
        assert key == ["row_uuid"]
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'appmetrica'"
            )
        }
        assert "events_application_id_event_timestamp_idx" in indexes


@pytest.mark.db
def test_migration_conforms_an_existing_narrower_table(empty_dsn):
    with open_connection(empty_dsn) as conn:
        conn.execute("CREATE SCHEMA appmetrica")
        conn.execute(
            "CREATE TABLE appmetrica.events (row_uuid uuid PRIMARY KEY, "
            "application_id integer, event_name text)"
        )
        conn.execute(
            "INSERT INTO appmetrica.events VALUES ('00000000-0000-0000-0000-000000000001', 1, 'x')"
        )
        migrate(conn)
        assert columns(conn, "events")["event_json"] == "jsonb"
        assert conn.execute("SELECT event_name FROM appmetrica.events").fetchall() == [("x",)]


@pytest.mark.unit
def test_to_row_is_deterministic_and_in_column_order():
    spec = appmetrica_table("events")
    raw = AppMetricaSandbox().rows("events", "1111", *DAY)[0]
    typed = cast_record("events", raw)
    row = to_row(spec, typed, "1111")
    assert len(row) == len(spec.columns)
    assert isinstance(row[0], uuid.UUID) and row[0].version == 5
    assert row[1] == 1111
    by_name = dict(zip(spec.column_names, row, strict=True))
    assert by_name["event_timestamp"] == typed["event_timestamp"]
    assert by_name["city"] == raw["city"]
    assert to_row(spec, dict(typed), "1111")[0] == row[0]
    assert row_uuid("events", typed, 1111) == row[0]
    # key order inside event_json does not matter; its content does
    reordered = dict(typed, event_json={"b": 2, "a": 1})
    same = dict(typed, event_json={"a": 1, "b": 2})
    assert to_row(spec, reordered, "1111")[0] == to_row(spec, same, "1111")[0]
    assert to_row(spec, same, "1111")[0] != row[0]
    assert to_row(spec, typed, "2222")[0] != row[0]
    later = dict(typed, event_timestamp=datetime(2030, 1, 1, tzinfo=UTC))
    assert to_row(spec, later, "1111")[0] != row[0]
    # fields outside the identity do not change the key
    assert to_row(spec, dict(typed, city="Казань"), "1111")[0] == row[0]
    assert set(IDENTITY_FIELDS) == set(APPMETRICA_TABLES)
    with pytest.raises(ValueError, match="numeric AppMetrica application id"):
        to_row(spec, typed, "app-1")
    with pytest.raises(KeyError, match="supported: events, installations, sessions_starts"):
        appmetrica_table("crashes")


@pytest.mark.unit
def test_csv_and_json_give_the_same_keys(tmp_path):
    spec = appmetrica_table("events")
    keys = {}
    for fmt in ("csv", "json"):
        path = tmp_path / f"e.{fmt}"
        write_events_file(path, fmt, 300, events_per_day=300)
        keys[fmt] = [
            to_row(spec, cast_record("events", record), "1111")[0]
            for _, record in iter_records(path, fmt)
        ]
    assert keys["csv"] == keys["json"]
    assert len(set(keys["csv"])) == 300


@pytest.mark.db
@pytest.mark.parametrize("resource", ["events", "installations", "sessions_starts"])
def test_copy_load_is_idempotent_and_typed(dwh_conn, tmp_path, resource):
    sandbox = AppMetricaSandbox(application_ids=("1111",))
    window = (datetime(2024, 3, 1), datetime(2024, 3, 2, 23, 59, 59))
    rows = sandbox.rows(resource, "1111", *window)
    spec = appmetrica_table(resource)
    repo = Repository(dwh_conn)

    def typed_rows():
        for raw in rows:
            yield to_row(spec, cast_record(resource, raw), "1111")

    assert (
        repo.copy_rows(spec, typed_rows())
        == len(rows)
        == sandbox.count_rows(resource, "1111", *window)
    )
    assert repo.copy_rows(spec, typed_rows()) == 0
    table = sql.Identifier("appmetrica", resource)
    count = dwh_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
    assert count == len(rows)
    if resource == "events":
        big = max(int(raw["appmetrica_device_id"]) for raw in rows)
        assert big >= 2**63
        stored = dwh_conn.execute(
            "SELECT count(*) FROM appmetrica.events WHERE appmetrica_device_id = %s", (big,)
        ).fetchone()[0]
        assert stored == sum(1 for raw in rows if int(raw["appmetrica_device_id"]) == big)
        sample = next(raw for raw in rows if raw["event_json"].startswith('{"screen"'))
        screen, city, stamp, local = dwh_conn.execute(
            "SELECT event_json->>'screen', city, event_timestamp, event_datetime "
            "FROM appmetrica.events WHERE event_timestamp = to_timestamp(%s) "
            "AND appmetrica_device_id = %s",
            (int(sample["event_timestamp"]), int(sample["appmetrica_device_id"])),
        ).fetchone()
        assert screen == cast_record("events", sample)["event_json"]["screen"]
        assert city == (sample["city"] or None)
        assert int(stamp.timestamp()) == int(sample["event_timestamp"])
        assert local.strftime("%Y-%m-%d %H:%M:%S") == sample["event_datetime"]
        nulls = dwh_conn.execute(
            "SELECT count(*) FROM appmetrica.events WHERE event_json IS NULL"
        ).fetchone()[0]
        assert nulls == sum(1 for raw in rows if raw["event_json"] == "")


@pytest.mark.unit
@pytest.mark.parametrize("resource", ["events", "installations", "sessions_starts"])
def test_row_converter_equals_cast_record_then_to_row(resource):
    spec = appmetrica_table(resource)
    convert = RowConverter(spec, "1111")
    rows = AppMetricaSandbox().rows(resource, "1111", datetime(2024, 3, 1), datetime(2024, 3, 3))
    assert rows
    for number, raw in enumerate(rows, start=1):
        assert convert(raw, row=number) == to_row(spec, cast_record(resource, raw), "1111")
    odd = dict(rows[0], city="", appmetrica_device_id="00042")  # leading zeros, empty text
    assert convert(odd) == to_row(spec, cast_record(resource, odd), "1111")
    assert convert(odd)[spec.column_names.index("city")] is None


@pytest.mark.unit
def test_row_converter_errors_and_json_text():
    spec = appmetrica_table("events")
    convert = RowConverter(spec, 1111)
    raw = AppMetricaSandbox().rows("events", "1111", *DAY)[0]
    with pytest.raises(CastError) as caught:
        convert(dict(raw, event_json="{not json"), row=41)
    assert (caught.value.field, caught.value.row) == ("event_json", 41)
    assert "row 41: field 'event_json'" in str(caught.value)
    row = convert(dict(raw, event_json='{"b": [1, 2], "a": "Москва"}'))
    assert row[spec.column_names.index("event_json")] == '{"a":"Москва","b":[1,2]}'
    assert (
        convert(dict(raw, event_json='"just text"'))[spec.column_names.index("event_json")]
        == '"just text"'
    )


@pytest.mark.db
def test_json_text_loads_as_json(dwh_conn):
    spec = appmetrica_table("events")
    convert = RowConverter(spec, "1111")
    raw = AppMetricaSandbox().rows("events", "1111", *DAY)[0]
    rows = [
        convert(dict(raw, event_json='"just text"', event_timestamp="1709251200")),
        convert(dict(raw, event_json='{"n": 1}', event_timestamp="1709251201")),
        convert(dict(raw, event_json="", event_timestamp="1709251202")),
    ]
    assert Repository(dwh_conn).copy_rows(spec, rows) == 3
    kinds = dwh_conn.execute(
        "SELECT jsonb_typeof(event_json) FROM appmetrica.events ORDER BY event_timestamp"
    ).fetchall()
    assert kinds == [("string",), ("object",), (None,)]
