"""Pydantic row models of the DWH tables, generated from the table specs.

`row_model(spec)` validates a row to insert so that PostgreSQL never has to refuse it: JSON
types only (no `"1"` for a number, no `0` for a boolean), timestamps ISO 8601 within years
1-9999 once in UTC, finite floats, integers in their column's range, text without NUL and
bounded (indexed text short enough for a btree entry), jsonb without NaN/Infinity or `\u0000`.
The value rules are the value layer's (`dwh_helper.transform.values`: `iso_timestamp_value`,
`json_integer`, `json_double`, `json_boolean`, `exact_text`, `exact_json`, `inet`, the text
caps); this module only types the columns. A bad value is a validation error naming the field.
`record_model(spec)` types a row as read back (timestamps as UTC with `Z`). `ROW_MODELS` holds
the row model of each of the eight tables.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from functools import partial
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PlainSerializer,
    WithJsonSchema,
    create_model,
)

from dwh_helper.dwh.tables import DWH_TABLES, Column, TableSpec
from dwh_helper.transform import values
from dwh_helper.transform.values import INDEXED_TEXT_MAX_CHARS, TEXT_MAX_CHARS


def _utc_text(value: dt.datetime) -> str:
    return values.utc_naive(value).isoformat() + "Z"


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(values.iso_timestamp_value),
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


def _integer(kind: str) -> Any:
    low, high = values.INT_RANGES[kind]
    return Annotated[
        int, Field(ge=low, le=high), BeforeValidator(partial(values.json_integer, kind=kind))
    ]


BigInt = _integer("bigint")
Int32 = _integer("integer")
Float = Annotated[float, BeforeValidator(values.json_double)]
Boolean = Annotated[bool, BeforeValidator(values.json_boolean)]


Inet = Annotated[
    IPvAnyAddress,
    BeforeValidator(values.inet),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]
Json = Annotated[Any, AfterValidator(values.exact_json)]


def _text(max_chars: int) -> Any:
    return Annotated[
        str,
        Field(strict=True, max_length=max_chars, pattern=r"^[^\x00]*$"),
        AfterValidator(values.exact_text),
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
    "boolean": Boolean,
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
