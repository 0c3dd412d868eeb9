"""The value layer: what a valid value of each column kind is, and its COPY text.

One definition, used by the Amplitude mapping, the AppMetrica parser and formatter, the
user-properties transform and the API. Its contract (tested value by value against
PostgreSQL in tests/transform/test_values_postgres.py): **a value a function here accepts is
accepted by PostgreSQL unchanged; a value it refuses raises `InvalidValue` with the reason**
(callers name the column: `RefusedValue`).

Rules, per kind:

- text: any string. U+0000 (NUL), which PostgreSQL cannot store in `text` or `jsonb`, is
  removed and counted as a repair (the raw file in S3 keeps the original). A string that is
  not valid Unicode — a lone surrogate (a JSON `\\ud800` escape, or bytes that were not
  UTF-8 decoded with `surrogateescape`) — is refused: we cannot know what it meant.
- integer kinds (`integer`, `bigint`, `uint64`): a JSON integer, or a string of ASCII
  digits with an optional sign (no spaces, `_`, full-width digits); range checked for the
  column's type. A float is accepted only when it is a whole number below 2**53.
- double: a finite JSON number, or an ASCII decimal string (`-1.5`, `2e10`), finite and not
  so small that it would round to 0.
- boolean: JSON true/false, or "true"/"false"/"True"/"False" (AppMetrica: also 1/0/yes/no).
- timestamp (Amplitude): exactly `YYYY-MM-DD HH:MM:SS[.ffffff]` or ISO 8601 with `T`,
  optionally ending in `Z` or an offset (`+03:00`, `+0300`, `+03`); stored as naive UTC.
  Anything else is refused — week dates, comma fractions, hour-only forms, second 60.
- unix_seconds (AppMetrica `*_timestamp`): ASCII digits (optional sign), years 1..9999.
- plain_datetime (AppMetrica `*_datetime`): exactly `YYYY-MM-DD hh:mm:ss`.
- json: nested at most `MAX_JSON_DEPTH` levels; every number within PostgreSQL numeric's
  range (what jsonb stores numbers as: at most 131072 digits before the point, 16383 after),
  kept exactly as written; no `NaN`/`Infinity`; strings and keys follow the text rule (NUL
  removed and counted).
- uuid: 32 hex digits, optionally with the usual dashes. inet: an IPv4 or IPv6 address.

The API's stricter forms (its row models, `dwh/models.py`) are here too: typed JSON only
(`json_integer`, `json_double`, `json_boolean`), a NUL refused rather than removed
(`exact_text`, `exact_json`), any ISO 8601 text Python reads (`iso_timestamp_value`), and the
text caps (`INDEXED_TEXT_MAX_CHARS`, `TEXT_MAX_CHARS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from dwh_helper.transform.value_api import (
    INDEXED_TEXT_MAX_CHARS,
    TEXT_MAX_CHARS,
    exact_json,
    exact_text,
    iso_timestamp_value,
    json_boolean,
    json_double,
    json_integer,
)
from dwh_helper.transform.value_json import (
    MAX_JSON_DEPTH,
    NUMERIC_MAX_INTEGER_DIGITS,
    NUMERIC_MAX_SCALE,
    clean_json,
    clean_json_text,
    json_depth,
    json_needs_check,
    json_number_reason,
    json_text,
    json_value,
    parse_json,
)
from dwh_helper.transform.value_numbers import (
    INT_RANGES,
    bigint,
    boolean,
    double,
    double_number,
    inet,
    int4,
    integer,
    integer_number,
    is_uuid,
    loose_boolean,
    loose_boolean_value,
    uint64,
    uuid,
)
from dwh_helper.transform.value_text import (
    SHOWN_CHARS,
    InvalidValue,
    RefusedValue,
    Repairs,
    clean_text,
    copy_escape,
    json_kind,
    safe_json,
    safe_text,
    shown,
)
from dwh_helper.transform.value_times import (
    plain_datetime,
    plain_datetime_value,
    timestamp,
    timestamp_value,
    unix_seconds,
    unix_seconds_value,
    utc_naive,
)

__all__ = [
    "COPY_CASTS",
    "INDEXED_TEXT_MAX_CHARS",
    "INT_RANGES",
    "MAX_JSON_DEPTH",
    "NUMERIC_MAX_INTEGER_DIGITS",
    "NUMERIC_MAX_SCALE",
    "SHOWN_CHARS",
    "TEXT_MAX_CHARS",
    "CheckedRecord",
    "InvalidValue",
    "OnInvalid",
    "RefusedValue",
    "Repairs",
    "ValueReport",
    "bigint",
    "boolean",
    "clean_json",
    "clean_json_text",
    "clean_text",
    "copy_escape",
    "double",
    "double_number",
    "exact_json",
    "exact_text",
    "inet",
    "int4",
    "integer",
    "integer_number",
    "is_uuid",
    "iso_timestamp_value",
    "json_boolean",
    "json_depth",
    "json_double",
    "json_integer",
    "json_kind",
    "json_needs_check",
    "json_number_reason",
    "json_text",
    "json_value",
    "loose_boolean",
    "loose_boolean_value",
    "parse_json",
    "plain_datetime",
    "plain_datetime_value",
    "safe_json",
    "safe_text",
    "shown",
    "text",
    "timestamp",
    "timestamp_value",
    "uint64",
    "unix_seconds",
    "unix_seconds_value",
    "utc_naive",
    "uuid",
    "yaml_null_policy",
]

OnInvalid = Literal["reject", "null"]
"""A column's policy for an invalid value: reject the record, or store NULL and report it."""


@dataclass(frozen=True)
class ValueReport:
    """A value that was stored NULL (the record loaded): table, column, value and why."""

    table: str
    column: str
    value: Any
    reason: str


@dataclass
class CheckedRecord:
    """A record mapped by a checked path: the record, its per-table (table, COPY line, key),
    the values stored NULL, how many values were repaired, and the record id for reports."""

    record: Any
    lines: list[tuple[Any, str | None, str | None]]
    reports: list[ValueReport] = field(default_factory=list)
    repairs: int = 0
    record_id: str | None = None


def yaml_null_policy(data: Any) -> Any:
    """A mapping entry with `on_invalid: null` as YAML reads it (None) given the policy "null"."""
    if isinstance(data, dict) and "on_invalid" in data and data["on_invalid"] is None:
        return {**data, "on_invalid": "null"}
    return data


def text(value: Any, repairs: Repairs | None = None) -> str:
    """COPY text of a text column: a string as is; a number or boolean as JSON writes it;
    an object or array as compact JSON."""
    if value.__class__ is str:
        return copy_escape(clean_text(value, repairs))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue("not a finite number")
        return repr(value)
    return json_value(value, repairs)


COPY_CASTS: dict[str, Callable[..., str]] = {
    "text": text,
    "uuid": uuid,
    "bigint": bigint,
    "integer": int4,
    "uint64": uint64,
    "double": double,
    "boolean": boolean,
    "timestamp": timestamp,
    "json": json_value,
    "inet": inet,
    "unix_seconds": unix_seconds,
    "plain_datetime": plain_datetime,
    "loose_boolean": loose_boolean,
}
"""Every kind's COPY text function: value → COPY text field, or InvalidValue."""
