"""The declarative event mapping: validation of the file, and each value rule."""

from __future__ import annotations

import json

import pytest

from dwh_helper.transform.event_mapping import (
    MappingError,
    MappingFileError,
    amplitude_mapping,
    load_event_mapping,
)

pytestmark = pytest.mark.unit

U = "54050f2a-63b7-11ed-ae7f-79799fc6c6bf"
EVENT = {
    "uuid": U,
    "$insert_id": "ins-1",
    "event_time": "2024-03-02 00:57:33.008000",
    "event_type": "open",
    "user_id": "155683",
    "session_id": 1709341053000,
    "device_id": "dev-1",
    "device_brand": "samsung",
    "ip_address": "95.24.1.10",
    "location_lat": 55.75,
    "location_lng": None,
    "city": "Москва",
    "user_properties": {"Age": "34 года", "path": "C:\\tmp\tx"},
    "event_properties": None,
    "groups": {},
    "is_attribution_event": False,
    "amplitude_attribution_ids": ["a", "b"],
}


def lines(event: dict) -> dict[str, list[str] | None]:
    mapped = amplitude_mapping().map_event(event)
    return {table.spec.name: (text.split("\t") if text else None) for table, text, _ in mapped}


def column(event: dict, table: str, name: str) -> str:
    mapper = next(t for t in amplitude_mapping().tables if t.spec.name == table)
    return lines(event)[table][mapper.columns.index(name)]


def test_tables_in_load_order_devices_first():
    names = [table.spec.name for table in amplitude_mapping().tables]
    assert names == [
        "mobile_devices",
        "events_part",
        "technical_data",
        "tmp_event_properties",
        "tmp_user_properties",
        "user_locations",
    ]


def test_renames_and_values():
    assert column(EVENT, "technical_data", "insert_id") == "ins-1"
    assert column(EVENT, "technical_data", "is_attribution_event") == "false"
    assert column(EVENT, "technical_data", "amplitude_attribution_ids") == '["a","b"]'
    assert column(EVENT, "technical_data", "groups_json") == "{}"
    assert column(EVENT, "events_part", "user_id") == "155683"
    assert column(EVENT, "events_part", "event_time") == "2024-03-02 00:57:33.008000"
    assert column(EVENT, "user_locations", "location_lng") == "\\N"
    assert column(EVENT, "user_locations", "city") == "Москва"
    assert column(EVENT, "tmp_event_properties", "event_properties_json") == "\\N"


def test_json_is_escaped_for_copy():
    # the JSON text {"path":"C:\\tmp\tx"} holds backslashes, each doubled for COPY
    assert column(EVENT, "tmp_user_properties", "user_properties_json") == (
        '{"Age":"34 года","path":"C:\\\\\\\\tmp\\\\tx"}'
    )


@pytest.mark.parametrize("raw", ["", "N/A", "-1", -1, None])
def test_user_id_null_values(raw):
    assert column({**EVENT, "user_id": raw}, "events_part", "user_id") == "\\N"


@pytest.mark.parametrize(("raw", "expected"), [(-1, "\\N"), ("-1", "\\N"), (0, "0"), (42, "42")])
def test_session_minus_one_is_no_session(raw, expected):
    assert column({**EVENT, "session_id": raw}, "events_part", "session_id") == expected
    assert column({**EVENT, "session_id": raw}, "tmp_user_properties", "session_id") == expected


@pytest.mark.parametrize("device", [None, ""])
def test_event_without_device_has_no_device_row(device):
    mapped = lines({**EVENT, "device_id": device})
    assert mapped["mobile_devices"] is None
    assert column({**EVENT, "device_id": device}, "events_part", "device_id") == "\\N"


def test_timestamps_with_a_zone_become_utc():
    event = {**EVENT, "event_time": "2024-03-02T03:57:33+03:00"}
    assert column(event, "events_part", "event_time") == "2024-03-02 00:57:33"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uuid": None}, "events_part.uuid: missing"),
        ({"uuid": "xyz"}, "events_part.uuid: not a uuid"),
        ({"event_time": "yesterday"}, "events_part.event_time: not a timestamp"),
        ({"event_time": "2022-W46-1"}, "events_part.event_time: not a timestamp"),
    ],
)
def test_bad_key_values_reject_naming_table_column_and_value(change, message):
    with pytest.raises(MappingError, match=message):
        amplitude_mapping().map_event({**EVENT, **change})


@pytest.mark.parametrize(
    ("change", "table", "column", "reason"),
    [
        ({"user_id": "12abc"}, "events_part", "user_id", "not an integer"),
        ({"user_id": "５０９０７１"}, "events_part", "user_id", "not an integer"),
        ({"user_id": str(2**63)}, "events_part", "user_id", "out of range"),
        ({"ip_address": "999.1.1.1"}, "user_locations", "ip_address", "not an IP address"),
        ({"location_lat": "north"}, "user_locations", "location_lat", "not a number"),
        ({"location_lat": "5_5.75"}, "user_locations", "location_lat", "not a number"),
    ],
)
def test_bad_other_values_are_stored_null_and_reported(change, table, column, reason):
    checked = amplitude_mapping().map_checked(json.dumps({**EVENT, **change}).encode())
    ((report),) = checked.reports
    assert (report.table, report.column) == (table, column)
    assert reason in report.reason
    assert report.value == next(iter(change.values()))
    fields = {t.spec.name: (t, text) for t, text, _ in checked.lines}
    mapper, text = fields[table]
    assert text.split("\t")[mapper.columns.index(column)] == "\\N"


def _write(tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "source: a\nrecord_id: uuid\ntables:\n  nope:\n    columns: {uuid: }\n",
            "tables.nope: unknown table 'nope'",
        ),
        (
            "source: a\nrecord_id: uuid\ntables:\n  tmp_event_properties:\n"
            "    columns: {uuid: , colour: }\n",
            "tables.tmp_event_properties.columns.colour: not a column",
        ),
        (
            "source: a\nrecord_id: uuid\ntables:\n  tmp_event_properties:\n"
            "    columns: {uuid: {type: integer}}\n",
            "type 'integer' cannot fill a uuid column",
        ),
        (
            "source: a\nrecord_id: uuid\ntables:\n  tmp_event_properties:\n"
            "    columns: {uuid: {type: decimal}}\n",
            "columns.uuid",
        ),
        (
            "source: a\nrecord_id: uuid\ntables:\n  tmp_event_properties:\n"
            "    columns: {event_properties_json: }\n",
            "NOT NULL column uuid is not mapped",
        ),
        ("source: a\ntables: {}\n", "record_id"),
    ],
)
def test_invalid_mapping_files_name_the_entry(tmp_path, body, message):
    with pytest.raises(MappingFileError) as error:
        load_event_mapping(_write(tmp_path, body))
    assert str(tmp_path / "m.yaml") in str(error.value)
    assert message in str(error.value)


def test_adding_a_field_is_a_config_change(tmp_path):
    body = (
        "source: custom\nrecord_id: id\ntables:\n  tmp_event_properties:\n    columns:\n"
        "      uuid: {from: id}\n      event_properties_json: {from: props}\n"
    )
    mapping = load_event_mapping(_write(tmp_path, body))
    ((table, text, _),) = mapping.map_event({"id": U, "props": {"k": 1}})
    assert text == f'{U}\t{{"k":1}}'


def test_compiled_fast_path_equals_the_checked_path_on_sandbox_events():
    from datetime import UTC, datetime

    from devtools.sandbox.amplitude_events import generate_hour

    mapping = amplitude_mapping()
    events = generate_hour(374182, datetime(2024, 3, 2, 10, tzinfo=UTC), 9, 2000)
    assert len(events) == 2000
    for event in events:
        record = mapping.decode(__import__("json").dumps(event).encode())
        for table in mapping.tables:
            assert table.line(record) == table.checked_line(record)
