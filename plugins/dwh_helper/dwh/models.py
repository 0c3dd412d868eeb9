"""Pydantic row models of the DWH tables, generated from the table specs.

`row_model(spec)` validates a row to insert (`event_time` and the other timestamps accept ISO
8601 only; a bad value is a validation error naming the field); `record_model(spec)` types a
row as read back. `ROW_MODELS` holds the row model of each of the eight tables.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
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
    create_model,
)

from dwh_helper.dwh.tables import DWH_TABLES, TableSpec


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
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _int_range(bits: int) -> AfterValidator:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range for a {bits}-bit integer")
        return value

    return AfterValidator(check)


def _strict_int(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_iso_timestamp),
    AfterValidator(_naive_utc),
    Field(description="ISO 8601; a zone is converted to UTC", examples=["2024-05-01T12:30:00"]),
]
BigInt = Annotated[int, BeforeValidator(_strict_int), _int_range(64)]
Int32 = Annotated[int, BeforeValidator(_strict_int), _int_range(32)]
Inet = Annotated[IPvAnyAddress, PlainSerializer(str, return_type=str)]
Json = Any

_PYTHON_TYPES: dict[str, Any] = {
    "uuid": uuid.UUID,
    "text": str,
    "timestamp": Timestamp,
    "bigint": BigInt,
    "integer": Int32,
    "double precision": float,
    "jsonb": Json,
    "inet": Inet,
    "boolean": bool,
}
_OUTPUT_TYPES: dict[str, Any] = {
    **_PYTHON_TYPES,
    "timestamp": dt.datetime,
    "bigint": int,
    "integer": int,
    "inet": Annotated[
        ipaddress.IPv4Address | ipaddress.IPv6Address | str, PlainSerializer(str, return_type=str)
    ],
}


def model_name(table: str, suffix: str) -> str:
    """`events_part` + `Row` → `EventsPartRow`."""
    return "".join(part.capitalize() for part in table.split("_")) + suffix


def row_model(spec: TableSpec) -> type[BaseModel]:
    """A POST row of `spec`: its columns typed, NOT NULL columns without default required."""
    fields: dict[str, Any] = {}
    for column in spec.columns:
        python_type = _PYTHON_TYPES[column.type]
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
