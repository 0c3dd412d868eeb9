"""Streaming reads of AppMetrica Logs API files (CSV, or JSON `{"data": [...]}`) in chunks.

`LogsApiReader(fmt, bind, kinds).chunks(stream)` yields (file name, number of the first
record from 1, records) without holding the file in memory. A CSV record is the list of its
values in the header's order; a JSON record a msgspec Struct of the file's fields (the first
item's keys, the typed fields of `kinds` first, then its text fields, unknown ones last). The
header (or the first item's keys) is handed to `bind(fields, structs)` before the first
record, so the caller can compile its formatter for exactly these fields. A file that cannot
be read (not UTF-8, cut short, not a Logs API JSON) is an `UnreadableFile` naming why.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import msgspec

from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS, FORMATS, field_text
from dwh_helper.sources.appmetrica_data_array import NotADataArray, iter_data_runs

__all__ = ["CHUNK", "CSV_CHUNK", "DEFAULT_FIELDS", "FORMATS", "LogsApiReader", "UnreadableFile"]

CHUNK = 128
"""JSON records per chunk handed to the loader (it maps a chunk in one call)."""
CSV_CHUNK = 32
"""CSV rows per chunk: fewer than JSON's, so that a chunk's rows (a list and some thirty
strings each) are still in the CPU's cache when the loader maps them and frees them — with
128 rows the AppMetrica CSV load took about a tenth more CPU (docs/benchmarks.md)."""

Chunk = tuple[str, int, list[Any]]
_decode_any = msgspec.json.Decoder().decode


class UnreadableFile(Exception):
    """The file itself (not one record) cannot be read; the message says why."""


class LogsApiReader:
    """The records of one Logs API file, in chunks; `bind(fields, structs)` is called with the
    file's fields before the first record (`structs`: records are msgspec Structs)."""

    def __init__(
        self,
        fmt: str,
        bind: Callable[[Sequence[str], bool], Any],
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: use 'csv' or 'json'")
        self.fmt = fmt
        self._bind = bind
        self._kinds = kinds or {}
        self.header: tuple[str, ...] | None = None
        """The fields of the records, in their order (once bound)."""
        self._decode_typed: Any = None
        self._record_type: Any = None
        self._decoded = 0  # JSON items decoded so far

    def chunks(self, source: BinaryIO) -> Iterator[Chunk]:
        """(file name, number of the first record from 1, records) in chunks of CSV_CHUNK
        rows or CHUNK JSON records."""
        if self.fmt == "csv":
            return self._csv_chunks(source)
        return self._json_chunks(source)

    def as_dict(self, raw: Any) -> Any:
        """A record as field → value (a record that is not a row or Struct as it is)."""
        if self.header is not None:
            if isinstance(raw, msgspec.Struct):
                raw = msgspec.structs.astuple(raw)
            if isinstance(raw, list | tuple):
                return dict(zip(self.header, raw, strict=False))
        return raw

    def _csv_chunks(self, source: BinaryIO) -> Iterator[Chunk]:
        entry = Path(getattr(source, "name", "file.csv")).name
        try:
            with io.TextIOWrapper(source, encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle, strict=True)  # a file cut in a quoted value fails
                header = next(reader, None)
                if header is None:
                    return
                self.header = tuple(header)
                self._bind(header, False)
                width = len(header)
                number = 1
                while rows := list(itertools.islice(reader, CSV_CHUNK)):
                    if len(rows[0]) == width and len(set(map(len, rows))) == 1:
                        yield entry, number, rows
                    else:
                        yield from _regular_rows(entry, number, rows, width)
                    number += len(rows)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise UnreadableFile(f"not a readable UTF-8 CSV: {exc}") from exc

    def _json_chunks(self, source: BinaryIO) -> Iterator[Chunk]:
        entry = Path(getattr(source, "name", "file.json")).name
        number = 1
        with source as handle:
            try:
                runs = iter_data_runs(handle, self._decode_run)
                try:
                    first = next(runs, [])
                except NotADataArray as other:  # another shape: the general streaming parser
                    runs = self._ijson_runs(other.replay(handle))
                    first = next(runs, [])
                for run in itertools.chain([first], runs):
                    for offset in range(0, len(run), CHUNK):
                        chunk = run[offset : offset + CHUNK]
                        yield entry, number, chunk
                        number += len(chunk)
            except (ijson.JSONError, msgspec.DecodeError) as exc:
                raise UnreadableFile(
                    f"not a complete Logs API JSON file after record {self._decoded} ({exc}); "
                    "re-export the day"
                ) from exc

    def _decode_run(self, array: Any) -> list[Any]:
        """A JSON array of items → their records (structs of the bound fields).

        The first run binds the file's fields (the first item's keys); later runs decode
        straight into a struct of those fields — a missing field reads as "" — and fall
        back to a general decode when a value is not a string (a JSON null or number).
        """
        if self._decode_typed is not None:
            try:
                records = self._decode_typed(array)
            except msgspec.ValidationError:  # a value that is not a string
                records = self._as_records(_decode_any(array))
        else:
            items = _decode_any(array)
            if items and isinstance(items[0], dict):
                self._bind_json(list(items[0]))
            records = self._as_records(items)
        self._decoded += len(records)
        return records

    def _bind_json(self, keys: list[str]) -> None:
        """Bind to the first item's keys and make the typed decoder: the struct's fields are
        the keys with the typed fields first and the text ones next (so a formatter takes the
        texts as one slice), unknown keys last."""
        kinds = self._kinds
        fields = sorted(keys, key=lambda key: 2 if key not in kinds else kinds[key] == "text")
        names = [f"f{i}" for i in range(len(fields))]  # any JSON key, even not an identifier
        self._record_type = msgspec.defstruct(
            "AppMetricaRecord",
            [(name, str, "") for name in names],
            rename=dict(zip(names, fields, strict=True)),
            gc=False,
        )
        self._decode_typed = msgspec.json.Decoder(list[self._record_type]).decode
        self.header = tuple(fields)
        self._bind(fields, True)

    def _as_records(self, items: list[Any]) -> list[Any]:
        """Items decoded in general → records; an item that is not an object is unreadable."""
        fields, record = self.header, self._record_type
        records = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not fields:
                raise UnreadableFile(
                    f"JSON record {self._decoded + index + 1} is a {type(item).__name__}, "
                    "not an object"
                )
            records.append(record(*[field_text(item.get(name)) for name in fields]))
        return records

    def _ijson_runs(self, handle: BinaryIO) -> Iterator[list[Any]]:
        """Records of a JSON file in another shape than `{"data": [...]}`, via ijson.

        A file without a top-level `data` array (an error answer saved as the file, a bare
        array) is unreadable, not an empty load.
        """
        found: list[bool] = []

        def events(parser: Iterator[tuple[str, str, Any]]) -> Iterator[tuple[str, str, Any]]:
            for prefix, event, value in parser:
                if prefix == "data" and event == "start_array":
                    found.append(True)
                yield prefix, event, value

        items = ijson.items(events(ijson.parse(handle, use_float=True)), "data.item")
        while run := list(itertools.islice(items, CHUNK)):
            if self.header is None and isinstance(run[0], dict):
                self._bind_json(list(run[0]))
            records = self._as_records(run)
            self._decoded += len(records)
            yield records
        if not found:
            raise UnreadableFile(
                'no top-level "data" array: not a Logs API JSON export (an error answer saved '
                "as the file?)"
            )


def _regular_rows(entry: str, first: int, rows: list[list[str]], width: int) -> Iterator[Chunk]:
    """The rows of a chunk one by one, blank lines skipped; a row of another width is
    unreadable, naming it."""
    for offset, row in enumerate(rows):
        if len(row) == width:
            yield entry, first + offset, [row]
        elif row:
            raise UnreadableFile(
                f"CSV record {first + offset} has {len(row)} values, the header has "
                f"{width}: the file is truncated or not a Logs API CSV; re-export the day"
            )
