"""Pydantic row models of the DWH tables, generated from the table specs.

`row_model(spec)` validates a row to insert so that PostgreSQL never has to refuse it: JSON
types only (no `"1"` for a number, no `0` for a boolean), timestamps ISO 8601 within years
1-9999 once in UTC, finite floats, integers in their column's range, text without NUL and
bounded (indexed text short enough for a btree entry), jsonb without NaN/Infinity or `\u0000`.
A bad value is a validation error naming the field. `record_model(spec)` types a row as read
back (timestamps as UTC with `Z`). `ROW_MODELS` holds the row model of each of the eight tables.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
    create_model,
)

from dwh_helper.dwh.tables import DWH_TABLES, Column, TableSpec


def _iso_timestamp(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string such as '2024-05-01T12:30:00' (UTC)")
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value[:40]!r} is not an ISO 8601 timestamp; use e.g. '2024-05-01T12:30:00'"
        ) from None


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(
                f"{value.isoformat()} is outside years 1-9999 once converted to UTC"
            ) from None
    return value


def _utc_text(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000); PostgreSQL text cannot")
    return value


def _plain_json(value: Any, depth: int = 0) -> Any:
    """A JSON value PostgreSQL's jsonb takes: finite numbers, no NUL in strings or keys."""
    if depth > 100:
        raise ValueError("nests deeper than 100 levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or Infinity (JSON has no such numbers)")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _plain_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _plain_json(item, depth + 1)
    return value


INDEXED_TEXT_MAX_CHARS = 512
"""Longest text in a key or index column: 512 characters are at most 2,048 UTF-8 bytes, under
the 2,704-byte btree entry limit with room for the other columns of the index."""
TEXT_MAX_CHARS = 65_536
"""Longest text in any other column."""

Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_iso_timestamp),
    AfterValidator(_naive_utc),
    Field(
        description="ISO 8601; a zone is converted to UTC; years 1-9999 in UTC",
        examples=["2024-05-01T12:30:00"],
    ),
]
UtcTimestamp = Annotated[
    dt.datetime,
    PlainSerializer(_utc_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


def _json_integer(value: Any) -> Any:
    """A JSON integer: a number without a fractional part (`3` or `3.0`), never text or a
    boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer, e.g. 42 (not text, not a boolean)")
    return value


BigInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), BeforeValidator(_json_integer)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1), BeforeValidator(_json_integer)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string, e.g. '203.0.113.7' or '2001:db8::1'")
    return value


Inet = Annotated[
    IPvAnyAddress,
    BeforeValidator(_text_only),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]
Json = Annotated[Any, AfterValidator(_plain_json)]


def _text(max_chars: int) -> Any:
    return Annotated[
        str,
        Field(strict=True, max_length=max_chars, pattern=r"^[^\x00]*$"),
        AfterValidator(_no_nul),
    ]


_PYTHON_TYPES: dict[str, Any] = {
    "uuid": uuid.UUID,
    "text": _text(TEXT_MAX_CHARS),
    "timestamp": Timestamp,
    "bigint": BigInt,
    "integer": Int32,
    "double precision": Float,
    "jsonb": Json,
    "inet": Inet,
    "boolean": StrictBool,
}
_OUTPUT_TYPES: dict[str, Any] = {
    **_PYTHON_TYPES,
    "text": str,
    "timestamp": UtcTimestamp,
    "bigint": int,
    "integer": int,
    "double precision": float,
    "jsonb": Any,
    "boolean": bool,
    "inet": Annotated[
        ipaddress.IPv4Address | ipaddress.IPv6Address | str, PlainSerializer(str, return_type=str)
    ],
}


def indexed_columns(spec: TableSpec) -> set[str]:
    """Columns of `spec` in its key or an index, or named like a text key of any DWH table
    (a foreign key: `events_part.device_id` → `mobile_devices.device_id`)."""
    names = set(spec.key) | {column for index in spec.indexes for column in index}
    referenced = {
        key
        for other in DWH_TABLES.values()
        for key in other.key
        if other.column(key).type == "text"
    }
    return names | (set(spec.column_names) & referenced)


def _input_type(spec: TableSpec, column: Column) -> Any:
    if column.type == "text" and column.name in indexed_columns(spec):
        return _text(INDEXED_TEXT_MAX_CHARS)
    return _PYTHON_TYPES[column.type]


def model_name(table: str, suffix: str) -> str:
    """`events_part` + `Row` → `EventsPartRow`."""
    return "".join(part.capitalize() for part in table.split("_")) + suffix


def row_model(spec: TableSpec) -> type[BaseModel]:
    """A POST row of `spec`: its columns typed, NOT NULL columns without default required."""
    fields: dict[str, Any] = {}
    for column in spec.columns:
        python_type = _input_type(spec, column)
        if column.not_null and column.default is None:
            fields[column.name] = (python_type, ...)
        elif column.not_null:
            fields[column.name] = (python_type, None)
        else:
            fields[column.name] = (python_type | None, None)
    return create_model(  # type: ignore[call-overload]
        model_name(spec.name, "Row"),
        __config__=ConfigDict(extra="forbid", title=model_name(spec.name, "Row")),
        __doc__=f"A row of {spec.name} to insert (unknown fields are refused).",
        **fields,
    )


def record_model(spec: TableSpec) -> type[BaseModel]:
    """A row of `spec` as GET returns it."""
    fields = {column.name: (_OUTPUT_TYPES[column.type] | None, None) for column in spec.columns}
    return create_model(  # type: ignore[call-overload]
        model_name(spec.name, "Record"),
        __doc__=f"A row of {spec.name}.",
        **fields,
    )


ROW_MODELS: dict[str, type[BaseModel]] = {
    name: row_model(spec) for name, spec in DWH_TABLES.items()
}
"""The row model of each DWH table, by table name."""
