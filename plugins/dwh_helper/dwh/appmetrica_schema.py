"""The `appmetrica` DWH schema: one typed table per Logs API resource, keyed by a UUIDv5.

Migration 2 creates schema `appmetrica` with the tables `events`,
`installations` and `sessions_starts` (`create_appmetrica_schema`, listed in
`dwh.schema.MIGRATIONS`). Each table has every field of its resource
as a typed column (see `dwh_helper.sources.appmetrica_parse` for the kinds),
plus `application_id bigint` and `row_uuid uuid` as the primary key.

Logs API rows have no natural key, so `row_uuid` is a UUIDv5 over the fields
that identify a row (`IDENTITY_FIELDS`, always preceded by the application
id): re-loading the same day inserts nothing new.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from dwh_helper.dwh.ddl import conform_table
from dwh_helper.dwh.tables import Column, TableSpec
from dwh_helper.sources.appmetrica_parse import (
    DEFAULT_FIELDS,
    CastError,
    field_caster,
    field_kind,
)

SCHEMA = "appmetrica"
DEFAULT_RESOURCE = "events"

ROW_UUID_NAMESPACE = uuid.UUID("6d1df4cb-3ff4-5bbc-914a-bf1b5d4b76b1")
"""Namespace of every row_uuid (uuid5(NAMESPACE_URL, 'https://github.com/dwh-helper/appmetrica'))."""

IDENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "events": (
        "appmetrica_device_id",
        "event_timestamp",
        "event_name",
        "session_id",
        "event_json",
    ),
    "installations": ("appmetrica_device_id", "installation_id", "install_timestamp"),
    "sessions_starts": ("appmetrica_device_id", "session_id", "session_start_timestamp"),
}
"""Fields (after the application id) whose values make up a row's identity, per resource."""

TIME_FIELDS: dict[str, str] = {
    "events": "event_timestamp",
    "installations": "install_timestamp",
    "sessions_starts": "session_start_timestamp",
}
"""The canonical time of a row per resource (indexed together with application_id)."""

SQL_TYPES: dict[str, str] = {
    "timestamp": "timestamptz",
    "datetime": "timestamp",
    "bigint": "bigint",
    "uint64": "numeric(20,0)",
    "bool": "boolean",
    "json": "jsonb",
    "text": "text",
}
"""SQL column type per field kind (unsigned 64-bit device ids do not fit a bigint)."""


def column_type(field: str) -> str:
    """SQL type of a Logs API field's column."""
    return SQL_TYPES[field_kind(field)]


def _spec(resource: str) -> TableSpec:
    columns = [
        Column("row_uuid", "uuid", not_null=True),
        Column("application_id", "bigint", not_null=True),
    ]
    columns += [
        Column(name, column_type(name))
        for name in DEFAULT_FIELDS[resource]
        if name != "application_id"
    ]
    return TableSpec(
        resource,
        tuple(columns),
        key=("row_uuid",),
        pk="row_uuid",
        schema=SCHEMA,
        indexes=(("application_id", TIME_FIELDS[resource]),),
    )


APPMETRICA_TABLES: dict[str, TableSpec] = {resource: _spec(resource) for resource in DEFAULT_FIELDS}
"""Table specs of schema `appmetrica`, by resource name."""


def appmetrica_table(resource: str = DEFAULT_RESOURCE) -> TableSpec:
    """The table spec of a resource, or a KeyError listing the supported resources."""
    try:
        return APPMETRICA_TABLES[resource]
    except KeyError:
        raise KeyError(
            f"no appmetrica table for resource {resource!r}; supported: "
            f"{', '.join(APPMETRICA_TABLES)}"
        ) from None


def identity_fields(resource: str) -> tuple[str, ...]:
    """Fields an export must include so that row_uuid identifies rows (application_id aside)."""
    appmetrica_table(resource)
    return IDENTITY_FIELDS[resource]


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _canonical(value: Any) -> str:
    """One value as text for the identity: the same for a value read from CSV or from JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return str(int(value.timestamp()))
        return value.isoformat(sep=" ")
    return _canonical_json(value)


def _application_id(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"application_id {value!r} must be a numeric AppMetrica application id")
    return int(text)


def _uuid5(name: str) -> uuid.UUID:
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


_NAMESPACE_BYTES = ROW_UUID_NAMESPACE.bytes


def row_uuid(resource: str, record: Mapping[str, Any], application_id: str | int) -> uuid.UUID:
    """The deterministic key of a typed record (as `cast_record` returns it).

    UUIDv5 in `ROW_UUID_NAMESPACE` over resource, application id and the
    `IDENTITY_FIELDS` values joined by U+001F (timestamps as Unix seconds,
    JSON with sorted keys, NULL as an empty string). A record lacking an identity
    field is keyed on every field it holds instead (see `fallback_identity`).
    """
    return to_row(appmetrica_table(resource), record, application_id)[0]


@dataclass(frozen=True)
class _Plan:
    identity: tuple[str, ...]
    names: tuple[str, ...]
    json_positions: tuple[tuple[int, str], ...]


_PLANS: dict[int, tuple[TableSpec, _Plan]] = {}


def _plan(spec: TableSpec) -> _Plan:
    """How to build a row of a spec, cached by identity (hashing a spec walks every column)."""
    cached = _PLANS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    if spec.column_names[:2] != ("row_uuid", "application_id") or spec.name not in IDENTITY_FIELDS:
        raise ValueError(f"{spec.qualified} is not an appmetrica table spec")
    plan = _Plan(
        identity=IDENTITY_FIELDS[spec.name],
        names=spec.column_names[2:],
        json_positions=tuple(
            (position + 2, column.name)
            for position, column in enumerate(spec.columns[2:])
            if column.type == "jsonb"
        ),
    )
    _PLANS[id(spec)] = (spec, plan)
    return plan


def to_row(spec: TableSpec, record: Mapping[str, Any], application_id: str | int) -> tuple:
    """A typed record as a tuple in the spec's column order, `row_uuid` first.

    Fields the table does not have are ignored; missing ones are NULL. jsonb
    values are JSON text (keys sorted), which `Repository.copy_rows` loads as
    is, so a JSON string stays a JSON string.
    """
    plan = _plan(spec)
    app_id = _application_id(application_id)
    get = record.get
    values: list[Any] = [None, app_id, *[get(name) for name in plan.names]]
    json_text: dict[str, str] = {}
    for position, name in plan.json_positions:
        value = values[position]
        if value is not None:
            text = json_text[name] = _canonical_json(value)
            values[position] = text
    parts = [spec.name, str(app_id)]
    identity = plan.identity
    if any(name not in record for name in identity):
        identity = fallback_identity(plan.names, record)
        parts.append(FALLBACK_MARK)
    for name in identity:
        text = json_text.get(name)
        parts.append(text if text is not None else _canonical(get(name)))
    values[0] = _uuid5("\x1f".join(parts))
    return tuple(values)


FALLBACK_MARK = "*"
"""Joins the key's parts when a record lacks an identity field, so such a key never equals a
declared one."""


def fallback_identity(names: Iterable[str], present: Container[str]) -> tuple[str, ...]:
    """The identity of a record (or file) lacking an identity field: every field it holds, in
    the table's column order — rows differing anywhere stay apart, exact duplicates collapse."""
    return tuple(name for name in names if name in present)


_INTEGER_KINDS = frozenset({"timestamp", "bigint", "uint64"})


class RowConverter:
    """Raw Logs API records (all strings) → rows of one appmetrica table, in one pass.

    `converter(record, row=n)` equals `to_row(spec, cast_record(resource,
    record, row=n), application_id)` — same casts, same `CastError`, same
    `row_uuid` — at a fraction of the cost; the bulk loader uses it.
    """

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
        # How each identity field enters the key, computed from the raw string where that gives
        # exactly what `_canonical` gives for the typed value.
        self._identity = tuple((name, positions[name], field_kind(name)) for name in plan.identity)

    def __call__(self, record: Mapping[str, str], row: int | None = None) -> tuple:
        """The row for one raw record; `CastError` (naming field, value and row) on a bad value."""
        get = record.get
        values: list[Any] = [
            None,
            self.application_id,
            *[get(name) or None for name in self._names],
        ]
        for position, name, caster, is_json in self._typed:
            value = values[position]
            if value is None:
                continue
            try:
                typed = caster(value)
            except ValueError as exc:
                raise CastError(name, value, str(exc), row) from None
            values[position] = _canonical_json(typed) if is_json else typed
        if any(name not in record for name, _, _ in self._identity):
            typed = dict(zip(self.spec.column_names[2:], values[2:], strict=True))
            parts = [self._prefix, FALLBACK_MARK]
            for name in fallback_identity(self._names, record):
                parts.append(_canonical(typed[name]))
            values[0] = _uuid5("\x1f".join(parts))
            return tuple(values)
        parts = [self._prefix]
        for name, position, kind in self._identity:
            raw = get(name)
            if not raw:
                parts.append("")
            elif kind in _INTEGER_KINDS:
                parts.append(str(int(raw)))
            elif kind == "json":
                parts.append(values[position])
            elif kind in ("text", "datetime"):
                parts.append(raw)
            else:
                parts.append(_canonical(values[position]))
        values[0] = _uuid5("\x1f".join(parts))
        return tuple(values)


def create_appmetrica_schema(conn: psycopg.Connection) -> None:
    """CREATE SCHEMA appmetrica and create (or conform) every table; safe to run again."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    for spec in APPMETRICA_TABLES.values():
        conform_table(conn, spec)
