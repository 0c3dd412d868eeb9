"""The run-by-run reader of `{"data": [...]}` Logs API JSON files."""

from __future__ import annotations

import io
import json

import msgspec
import pytest

from dwh_helper.sources import appmetrica_data_array
from dwh_helper.sources.appmetrica_data_array import NotADataArray, iter_data_runs

pytestmark = pytest.mark.unit

_decode = msgspec.json.Decoder().decode

# values whose `}` look like the end of an item: inside strings and nested values
TRICKY = [
    '[{"a": 1},{"b": 2}]',
    "}, {",
    "}]",
    '"},{"',
    "no braces at all",
    "Ёжик } в тумане ]",
]


def _items(count: int) -> list[dict]:
    return [
        {
            "event_json": TRICKY[i % len(TRICKY)],
            "n": str(i),
            **({"nested": [{"x": i}, {"y": "}]"}]} if i % 4 == 0 else {}),
        }
        for i in range(count)
    ]


def _read(body: bytes) -> list[dict]:
    runs = iter_data_runs(io.BytesIO(body), _decode)
    return [item for run in runs for item in run]


@pytest.mark.parametrize("block", [7, 64, 333, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_every_item_is_read_once_in_order_whatever_the_block_size(monkeypatch, block, indent):
    monkeypatch.setattr(appmetrica_data_array, "BLOCK", block)
    items = _items(120)
    body = json.dumps({"data": items}, indent=indent, ensure_ascii=False).encode()
    assert _read(body) == items


def test_whole_blocks_are_decoded_in_few_calls():
    items = _items(3000)
    calls = []

    def decode(array: bytes) -> list:
        calls.append(len(array))
        return _decode(array)

    body = json.dumps({"data": items}).encode()
    got = [item for run in iter_data_runs(io.BytesIO(body), decode) for item in run]
    assert got == items
    assert len(calls) < 60  # not one call per item (a false end costs a few item-by-item)


def test_an_empty_array_has_no_runs():
    assert _read(b'{"data": [ ]}\n') == []


@pytest.mark.parametrize("block", [16, 1 << 20])
def test_a_file_cut_anywhere_is_an_error_never_a_short_read(monkeypatch, block):
    monkeypatch.setattr(appmetrica_data_array, "BLOCK", block)
    body = json.dumps({"data": _items(12)}).encode()
    for cut in range(len('{"data": [') + 1, len(body) - 1):
        with pytest.raises(msgspec.DecodeError):
            _read(body[:cut])


def test_junk_after_the_array_is_an_error():
    with pytest.raises(msgspec.DecodeError, match="closing brace"):
        _read(b'{"data":[{"a":"1"}]} junk')


def test_another_shape_is_told_before_any_item():
    with pytest.raises(NotADataArray):
        _read(b'{"meta": {}, "data": [{"a": "1"}]}')


def test_a_broken_stretch_longer_than_the_limit_is_an_error(monkeypatch):
    monkeypatch.setattr(appmetrica_data_array, "BLOCK", 64)
    monkeypatch.setattr(appmetrica_data_array, "MAX_ITEM", 1024)
    body = b'{"data":[{"a":"' + b"x" * 5000 + b'"}]}'
    with pytest.raises(msgspec.DecodeError, match="no end of an item"):
        _read(body)
