"""The loader's streaming reader of Logs API files: chunks, the bound header, unreadable files."""

from __future__ import annotations

import io
import json

import pytest

from dwh_helper.sources.appmetrica_parse import CSV_CHUNK, LogsApiReader, UnreadableFile

pytestmark = pytest.mark.unit

KINDS = {"event_timestamp": "unix_seconds", "session_id": "bigint", "city": "text"}


def _read(fmt: str, body: bytes, kinds=KINDS):
    bound: list[tuple[tuple[str, ...], bool]] = []
    reader = LogsApiReader(
        fmt, lambda fields, structs: bound.append((tuple(fields), structs)), kinds
    )
    stream = io.BytesIO(body)
    stream.name = f"/tmp/day.{fmt}"
    chunks = list(reader.chunks(stream))
    return reader, bound, chunks


def test_csv_binds_the_header_then_yields_rows_in_numbered_chunks():
    rows = "".join(f"{1709251200 + i},{i},Москва\n" for i in range(CSV_CHUNK + 5))
    body = ("\ufeffevent_timestamp,session_id,city\n" + rows).encode()
    reader, bound, chunks = _read("csv", body)
    assert bound == [(("event_timestamp", "session_id", "city"), False)]
    assert [(entry, first, len(records)) for entry, first, records in chunks] == [
        ("day.csv", 1, CSV_CHUNK),
        ("day.csv", CSV_CHUNK + 1, 5),
    ]
    assert chunks[0][2][0] == ["1709251200", "0", "Москва"]
    assert reader.as_dict(chunks[1][2][-1]) == {
        "event_timestamp": str(1709251200 + CSV_CHUNK + 4),
        "session_id": str(CSV_CHUNK + 4),
        "city": "Москва",
    }


def test_csv_blank_lines_are_skipped_and_a_short_row_is_unreadable():
    _, _, chunks = _read("csv", b"city,session_id\na,1\n\nb,2\n")
    assert [records for _, _, records in chunks] == [[["a", "1"]], [["b", "2"]]]
    with pytest.raises(UnreadableFile, match="CSV record 2 has 1 values, the header has 2"):
        _read("csv", b"city,session_id\na,1\nb\n")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"city\n\xff\xfe\n", "not a readable UTF-8 CSV"),
        (b'city\n"cut in a quote', "not a readable UTF-8 CSV"),
    ],
)
def test_an_unreadable_csv_says_why(body, message):
    with pytest.raises(UnreadableFile, match=message):
        _read("csv", body)


def test_json_binds_typed_fields_first_and_reads_nulls_and_numbers_as_text():
    items = [
        {"city": "Казань", "extra": "x", "session_id": "7", "event_timestamp": "1709251200"},
        {"city": None, "extra": "y", "session_id": 8, "event_timestamp": "1709251201"},
    ]
    reader, bound, chunks = _read("json", json.dumps({"data": items}).encode())
    assert bound == [(("session_id", "event_timestamp", "city", "extra"), True)]
    records = [record for _, _, chunk in chunks for record in chunk]
    assert [reader.as_dict(record) for record in records] == [
        {"session_id": "7", "event_timestamp": "1709251200", "city": "Казань", "extra": "x"},
        {"session_id": "8", "event_timestamp": "1709251201", "city": "", "extra": "y"},
    ]


def test_json_of_another_shape_goes_through_ijson():
    body = b'{"meta": {"n": 1}, "data": [{"city": "a"}, {"city": "b"}]}'
    reader, bound, chunks = _read("json", body)
    assert bound == [(("city",), True)]
    assert [reader.as_dict(r) for _, _, chunk in chunks for r in chunk] == [
        {"city": "a"},
        {"city": "b"},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": [5, {"city": "a"}]}', "JSON record 1 is a int, not an object"),
        (b'{"error": "quota exceeded"}', 'no top-level "data" array'),
        (b'{"data": [{"city": "a"}, {"city": "b', "not a complete Logs API JSON file"),
    ],
)
def test_an_unreadable_json_says_why(body, message):
    with pytest.raises(UnreadableFile, match=message):
        _read("json", body)


def test_an_unknown_format_is_refused_at_once():
    with pytest.raises(ValueError, match="format 'tsv': use 'csv' or 'json'"):
        LogsApiReader("tsv", lambda fields, structs: None)
