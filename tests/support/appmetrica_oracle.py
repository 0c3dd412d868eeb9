"""Plain, slow reference implementations of the AppMetrica loader's work (test oracles).

The loader runs generated code (`transform.appmetrica_formatter.RowFormatter`); these
functions do the same work the obvious way, value by value, so the tests can compare:

- `iter_records(path, fmt)`: (record number, raw string values) of a Logs API CSV or JSON file;
- `cast_record(resource, record)`: typed Python values by the catalogue's kinds
  (`unix_seconds` → aware UTC datetime, `timestamp` → naive datetime, `bigint`/`uint64` → int,
  `boolean` → bool, `json` → the parsed value, `text` → str; "" → None);
- `to_row(spec, typed, application_id)` / `row_uuid(resource, typed, application_id)`: the
  table row and its deterministic key;
- `RowConverter(spec, application_id)`: `to_row(cast_record(...))` in one pass.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ijson

from dwh_helper.catalogue.appmetrica import FORMATS, field_kinds, field_text, resource
from dwh_helper.dwh.appmetrica_schema import (
    FALLBACK_MARK,
    IDENTITY_FIELDS,
    ROW_UUID_NAMESPACE,
    appmetrica_table,
    fallback_identity,
)
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.transform import values
from dwh_helper.transform.appmetrica_formatter import CastError, checked_cast

KINDS = field_kinds()
"""The kind of every catalogue field by name (a field has one kind in every resource)."""

CASTERS: dict[str, Callable[[str], Any] | None] = {
    "unix_seconds": checked_cast(values.unix_seconds_value),
    "timestamp": checked_cast(values.plain_datetime_value),
    "bigint": checked_cast(lambda value: values.integer_number(value, "bigint")),
    "uint64": checked_cast(lambda value: values.integer_number(value, "uint64")),
    "boolean": checked_cast(values.loose_boolean_value),
    "json": checked_cast(lambda value: values.clean_json(values.parse_json(value))),
    "text": None,
}
"""Per kind: a non-empty raw string → its Python value (None: kept as the string)."""


def field_kind(name: str) -> str:
    """The catalogue kind of a field by name; text for a field the catalogue does not know."""
    return KINDS.get(name, "text")


def field_caster(name: str) -> Callable[[str], Any] | None:
    """The function typing a non-empty raw value of this field (None for text)."""
    return CASTERS[field_kind(name)]


def cast_record(name: str, record: dict[str, str], *, row: int | None = None) -> dict[str, Any]:
    """Typed values of one raw record; `CastError` on a bad value. Unknown fields stay text."""
    resource(name)
    typed: dict[str, Any] = {}
    for field, value in record.items():
        if value is None or value == "":
            typed[field] = None
            continue
        caster = field_caster(field)
        if caster is None:
            typed[field] = value
            continue
        try:
            typed[field] = caster(value)
        except ValueError as exc:
            raise CastError(field, value, str(exc), row) from None
    return typed


def iter_records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(record number from 1, raw string values) for each record of a Logs API file.

    CSV through the `csv` module, JSON (`{"data": [...]}`) through ijson; a leading UTF-8
    BOM is skipped in both.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported AppMetrica file format {fmt!r}; use 'csv' or 'json'")
    path = Path(path)
    if fmt == "csv":
        yield from _iter_csv(path)
    else:
        yield from _iter_json(path)


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        for number, row in enumerate(reader, start=1):
            if len(row) != width:
                if not row:
                    continue
                raise ValueError(
                    f"{path}: CSV record {number} (line {reader.line_num}) has {len(row)} "
                    f"values, the header has {width}: the file is truncated or not a Logs API CSV"
                )
            yield number, dict(zip(header, row, strict=True))


def _iter_json(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, "rb") as handle:
        if handle.read(3) != b"\xef\xbb\xbf":
            handle.seek(0)
        try:
            for number, item in enumerate(ijson.items(handle, "data.item"), start=1):
                if not isinstance(item, dict):
                    raise ValueError(
                        f"{path}: JSON record {number} is a {type(item).__name__}, not an object"
                    )
                yield number, {key: field_text(value) for key, value in item.items()}
        except ijson.JSONError as exc:
            raise ValueError(
                f"{path}: not a complete Logs API JSON file ({exc}); re-export the window"
            ) from exc


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _canonical(value: Any) -> str:
    """One value as text for the identity: the same for a value read from CSV or from JSON."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return str(int(value.timestamp()))
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return _canonical_json(value)
    return field_text(value)  # "" for NULL, strings as they are, true/false, integers


def _application_id(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"application_id {value!r} must be a numeric AppMetrica application id")
    return int(text)


def _uuid5(name: str) -> uuid.UUID:
    digest = hashlib.sha1(ROW_UUID_NAMESPACE.bytes + name.encode(), usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


@dataclass(frozen=True)
class _Plan:
    identity: tuple[str, ...]
    names: tuple[str, ...]
    json_positions: tuple[tuple[int, str], ...]


def _plan(spec: TableSpec) -> _Plan:
    if spec.column_names[:2] != ("row_uuid", "application_id") or spec.name not in IDENTITY_FIELDS:
        raise ValueError(f"{spec.qualified} is not an appmetrica table spec")
    return _Plan(
        identity=IDENTITY_FIELDS[spec.name],
        names=spec.column_names[2:],
        json_positions=tuple(
            (position + 2, column.name)
            for position, column in enumerate(spec.columns[2:])
            if column.type == "jsonb"
        ),
    )


def row_uuid(name: str, record: Mapping[str, Any], application_id: str | int) -> uuid.UUID:
    """The deterministic key of a typed record (as `cast_record` returns it): UUIDv5 over
    resource, application id and the identity values joined by U+001F (timestamps as Unix
    seconds, JSON with sorted keys, NULL as ""); every held field when one is missing."""
    return to_row(appmetrica_table(name), record, application_id)[0]


def to_row(spec: TableSpec, record: Mapping[str, Any], application_id: str | int) -> tuple:
    """A typed record as a tuple in the spec's column order, `row_uuid` first (jsonb as JSON
    text with sorted keys; fields the table lacks ignored, missing ones NULL)."""
    plan = _plan(spec)
    app_id = _application_id(application_id)
    get = record.get
    row: list[Any] = [None, app_id, *[get(name) for name in plan.names]]
    json_text: dict[str, str] = {}
    for position, name in plan.json_positions:
        value = row[position]
        if value is not None:
            text = json_text[name] = _canonical_json(value)
            row[position] = text
    parts = [spec.name, str(app_id)]
    identity = plan.identity
    if any(name not in record for name in identity):
        identity = fallback_identity(plan.names, record)
        parts.append(FALLBACK_MARK)
    for name in identity:
        text = json_text.get(name)
        parts.append(text if text is not None else _canonical(get(name)))
    row[0] = _uuid5("\x1f".join(parts))
    return tuple(row)


_INTEGER_KINDS = frozenset({"unix_seconds", "bigint", "uint64"})


class RowConverter:
    """Raw records → rows of one appmetrica table, in one pass: `converter(record, row=n)`
    equals `to_row(spec, cast_record(resource, record, row=n), application_id)`."""

    def __init__(self, spec: TableSpec, application_id: str | int) -> None:
        plan = _plan(spec)
        self.spec = spec
        self.application_id = _application_id(application_id)
        self._names = plan.names
        self._prefix = f"{spec.name}\x1f{self.application_id}"
        self._typed: list[tuple[int, str, Callable[[str], Any], bool]] = []
        for position, name in enumerate(plan.names, start=2):
            caster = field_caster(name)
            if caster is not None:
                self._typed.append((position, name, caster, spec.columns[position].type == "jsonb"))
        positions = {name: position for position, name in enumerate(spec.column_names)}
        self._identity = tuple((name, positions[name], field_kind(name)) for name in plan.identity)

    def __call__(self, record: Mapping[str, str], row: int | None = None) -> tuple:
        """The row for one raw record; `CastError` (naming field, value and row) on a bad value."""
        get = record.get
        out: list[Any] = [None, self.application_id, *[get(name) or None for name in self._names]]
        for position, name, caster, is_json in self._typed:
            value = out[position]
            if value is None:
                continue
            try:
                typed = caster(value)
            except ValueError as exc:
                raise CastError(name, value, str(exc), row) from None
            out[position] = _canonical_json(typed) if is_json else typed
        if any(name not in record for name, _, _ in self._identity):
            typed_record = dict(zip(self.spec.column_names[2:], out[2:], strict=True))
            parts = [self._prefix, FALLBACK_MARK]
            for name in fallback_identity(self._names, record):
                parts.append(_canonical(typed_record[name]))
            out[0] = _uuid5("\x1f".join(parts))
            return tuple(out)
        parts = [self._prefix]
        for name, position, kind in self._identity:
            raw = get(name)
            if not raw:
                parts.append("")
            elif kind in _INTEGER_KINDS:
                parts.append(str(int(raw)))
            elif kind == "json":
                parts.append(out[position])
            elif kind in ("text", "timestamp"):
                parts.append(raw)
            else:
                parts.append(_canonical(out[position]))
        out[0] = _uuid5("\x1f".join(parts))
        return tuple(out)
