"""Request and response models of `/db`, generated from the DWH table specs."""

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

TABLE_URL_NAMES: dict[str, str] = {
    "events-part": "events_part",
    "mobile-devices": "mobile_devices",
    "permanent-user-properties": "permanent_user_properties",
    "changeable-user-properties": "changeable_user_properties",
    "technical-data": "technical_data",
    "event-properties": "tmp_event_properties",
    "user-properties": "tmp_user_properties",
    "user-locations": "user_locations",
}
"""URL name under `/db/` → DWH table name."""


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


def _class_name(table: str, suffix: str) -> str:
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
        _class_name(spec.name, "Row"),
        __config__=ConfigDict(extra="forbid", title=_class_name(spec.name, "Row")),
        __doc__=f"A row of {spec.name} to insert (unknown fields are refused).",
        **fields,
    )


def record_model(spec: TableSpec) -> type[BaseModel]:
    """A row of `spec` as GET returns it."""
    fields = {column.name: (_OUTPUT_TYPES[column.type] | None, None) for column in spec.columns}
    return create_model(  # type: ignore[call-overload]
        _class_name(spec.name, "Record"),
        __doc__=f"A row of {spec.name}.",
        **fields,
    )


class InsertResponse(BaseModel):
    """What a POST inserted: keys of the new rows (conflicts skipped), their count, statements."""

    inserted_ids: list[str]
    count: int = Field(description="Rows inserted; rows that already existed are not counted")
    batches: int = Field(description="INSERT statements run (chunked under 65,535 parameters)")


def batch_model(spec: TableSpec, row: type[BaseModel]) -> type[BaseModel]:
    """The POST body `{"data": [...]}` of `spec`."""
    return create_model(  # type: ignore[call-overload]
        _class_name(spec.name, "Batch"),
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Rows to insert into {spec.name}; existing keys are skipped.",
        data=(list[row], Field(min_length=1, description="At least one row")),  # type: ignore[valid-type]
    )


def rows_model(spec: TableSpec, record: type[BaseModel]) -> type[BaseModel]:
    """The GET answer `{"rows": [...], "count": N}` of `spec`."""
    return create_model(  # type: ignore[call-overload]
        _class_name(spec.name, "Rows"),
        __doc__=f"Rows of {spec.name}.",
        rows=(list[record], ...),  # type: ignore[valid-type]
        count=(int, ...),
    )


class TableModels:
    """The four models of one table."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.row = row_model(spec)
        self.record = record_model(spec)
        self.batch = batch_model(spec, self.row)
        self.rows = rows_model(spec, self.record)


TABLE_MODELS: dict[str, TableModels] = {
    url_name: TableModels(DWH_TABLES[table]) for url_name, table in TABLE_URL_NAMES.items()
}
"""Models per URL name."""
