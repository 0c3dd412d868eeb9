"""The reference reads and casts (tests/support/appmetrica_oracle.py) the loader is checked by."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime

import pytest

from devtools.sandbox.appmetrica import write_events_file
from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS
from dwh_helper.transform.appmetrica_formatter import CastError
from tests.support.appmetrica_oracle import cast_record, field_kind, iter_records

pytestmark = pytest.mark.unit

BOM = "\ufeff"


def test_csv_with_bom_quotes_newlines_and_cyrillic(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        BOM + "event_name,event_json,city\n"
        'purchase,"{""note"": ""a, \\""b\\""\\nc""}",Москва\n'
        "app_open,,Санкт-Петербург\n",
        encoding="utf-8",
    )
    records = list(iter_records(path, "csv"))
    assert [number for number, _ in records] == [1, 2]
    first = records[0][1]
    assert list(first) == ["event_name", "event_json", "city"]  # BOM not glued to the header
    assert json.loads(first["event_json"]) == {"note": 'a, "b"\nc'}
    assert first["city"] == "Москва"
    assert records[1][1] == {"event_name": "app_open", "event_json": "", "city": "Санкт-Петербург"}


def test_json_with_bom_yields_strings(tmp_path):
    path = tmp_path / "events.json"
    path.write_bytes(
        (
            BOM + '{"data":[{"event_name":"a","event_timestamp":"1709341053","n":5,"ok":true},'
            '{"event_name":"Открыл экран","event_timestamp":"1709341054","n":null,"ok":false}]}'
        ).encode()
    )
    records = list(iter_records(path, "json"))
    assert records == [
        (1, {"event_name": "a", "event_timestamp": "1709341053", "n": "5", "ok": "true"}),
        (
            2,
            {"event_name": "Открыл экран", "event_timestamp": "1709341054", "n": "", "ok": "false"},
        ),
    ]


def test_empty_files(tmp_path):
    (tmp_path / "a.csv").write_text("event_name,city\n")
    (tmp_path / "b.csv").write_text("")
    (tmp_path / "c.json").write_text('{"data":[]}')
    assert list(iter_records(tmp_path / "a.csv", "csv")) == []
    assert list(iter_records(tmp_path / "b.csv", "csv")) == []
    assert list(iter_records(tmp_path / "c.json", "json")) == []


def test_truncated_files_raise_with_the_path(tmp_path):
    csv_path = tmp_path / "cut.csv"
    csv_path.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(
        ValueError, match=r"cut\.csv: CSV record 2 .* has 2 values, the header has 3"
    ):
        list(iter_records(csv_path, "csv"))
    json_path = tmp_path / "cut.json"
    json_path.write_text('{"data":[{"a":"1"},{"a":"2"')
    with pytest.raises(ValueError, match=r"cut\.json: not a complete Logs API JSON file"):
        list(iter_records(json_path, "json"))


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use 'csv' or 'json'"):
        list(iter_records(tmp_path / "x.tsv", "tsv"))


def test_cast_types():
    typed = cast_record(
        "events",
        {
            "event_timestamp": "1709341053",
            "event_datetime": "2024-03-02 03:57:33",
            "session_id": "10000000012",
            "appmetrica_device_id": "18000000000000000000",
            "application_id": "1111",
            "event_json": '{"screen":"checkout","items":3,"tags":["новинка"]}',
            "ios_ifa": "",
            "mcc": "250",
            "city": "Москва",
            "something_new": "kept",
        },
    )
    assert typed["event_timestamp"] == datetime(2024, 3, 2, 0, 57, 33, tzinfo=UTC)
    assert typed["event_timestamp"].tzinfo is UTC
    assert typed["event_datetime"] == datetime(2024, 3, 2, 3, 57, 33)
    assert typed["event_datetime"].tzinfo is None
    assert typed["session_id"] == 10000000012
    assert typed["appmetrica_device_id"] == 18_000_000_000_000_000_000  # above 2**63: uint64
    assert typed["application_id"] == 1111
    assert typed["event_json"] == {"screen": "checkout", "items": 3, "tags": ["новинка"]}
    assert typed["ios_ifa"] is None
    assert typed["mcc"] == "250"
    assert typed["city"] == "Москва"
    assert typed["something_new"] == "kept"


def test_cast_booleans_of_installations():
    typed = cast_record("installations", {"is_reinstallation": "true", "is_reattribution": "0"})
    assert typed == {"is_reinstallation": True, "is_reattribution": False}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("event_json", '{"screen": "checkout"', "not valid JSON"),
        ("event_timestamp", "2024-03-02", "expected Unix seconds"),
        ("event_datetime", "02.03.2024 03:57", "expected 'YYYY-MM-DD hh:mm:ss'"),
        ("session_id", "abc", "not an integer"),
        ("session_id", str(2**63), "out of range for bigint"),
        ("appmetrica_device_id", "-1", "out of range for uint64"),
        ("is_reinstallation", "maybe", "expected true/false"),
    ],
)
def test_cast_errors_name_field_value_and_row(field, value, reason):
    with pytest.raises(CastError) as caught:
        cast_record(
            "installations" if field.startswith("is_") else "events", {field: value}, row=17
        )
    error = caught.value
    assert error.field == field
    assert error.value == value
    assert error.row == 17
    assert reason in str(error)
    assert str(error).startswith(f"row 17: field {field!r}")


def test_unknown_resource_is_refused():
    with pytest.raises(ValueError, match="use one of events, installations, sessions_starts"):
        cast_record("crashes", {})


def test_field_kinds_cover_every_default_field():
    kinds = {name: field_kind(name) for fields in DEFAULT_FIELDS.values() for name in fields}
    assert kinds["install_receive_timestamp"] == "unix_seconds"
    assert kinds["session_start_datetime"] == "timestamp"
    assert kinds["tracking_id"] == "bigint"
    assert kinds["installation_id"] == "text"  # a hex string, not a number
    assert kinds["profile_id"] == "text"  # set by the app, any string
    assert len(DEFAULT_FIELDS["events"]) == 32


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_reading_streams_in_flat_memory(tmp_path, fmt):
    path = tmp_path / f"big.{fmt}"
    size = write_events_file(path, fmt, 6_000, events_per_day=3_000)
    assert path.stat().st_size == size > 2_000_000
    tracemalloc.start()
    try:
        count = 0
        for number, record in iter_records(path, fmt):
            cast_record("events", record, row=number)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6_000
    assert peak < 500_000, f"peak {peak} bytes while reading a {size}-byte file"
