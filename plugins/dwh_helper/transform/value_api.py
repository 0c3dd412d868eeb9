"""The API's strict forms of the value layer: typed JSON only, a NUL refused, any ISO 8601."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dwh_helper.transform.value_json import clean_json
from dwh_helper.transform.value_numbers import double_number, integer_number
from dwh_helper.transform.value_text import InvalidValue, Repairs, clean_text, shown
from dwh_helper.transform.value_times import utc_naive

# -- the API's strict forms -------------------------------------------------------------------
# The API takes typed JSON: a number must be a JSON number and a boolean JSON true/false (no
# "12" or "true" text, no 0/1), and a NUL is refused rather than removed (the client can
# resend; no raw file keeps the original). Past those checks the rules above apply.

INDEXED_TEXT_MAX_CHARS = 512
"""Longest text in a key or index column: 512 characters are at most 2,048 UTF-8 bytes, under
the 2,704-byte btree entry limit with room for the other columns of the index."""
TEXT_MAX_CHARS = 65_536
"""Longest text in any other column (the API's cap)."""

_NUL_REFUSED = "must not contain the NUL character (\\u0000); PostgreSQL text cannot"


def exact_text(value: str) -> str:
    """`value` when PostgreSQL stores it unchanged: the text rule, a NUL refused not removed."""
    if "\x00" in value:
        raise InvalidValue(_NUL_REFUSED)
    return clean_text(value)


def exact_json(value: Any) -> Any:
    """A decoded JSON `value` unchanged when `clean_json` accepts it without removing a NUL
    (depth, finite numbers in PostgreSQL's range, text rule); a NUL in a string or key is
    refused."""
    repairs = Repairs()
    clean_json(value, repairs)
    if repairs.count:
        raise InvalidValue(f"a string or key {_NUL_REFUSED}")
    return value


def _json_number_only(value: Any, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"must be a JSON {example} (not text, not a boolean)")


def json_integer(value: Any, kind: str = "bigint") -> int:
    """`integer_number` of a JSON number only: text and booleans refused."""
    _json_number_only(value, "integer, e.g. 42")
    return integer_number(value, kind)


def json_double(value: Any) -> float:
    """`double_number` of a JSON number only: text and booleans refused."""
    _json_number_only(value, "number, e.g. 55.75")
    return double_number(value)


def json_boolean(value: Any) -> bool:
    """JSON true or false only (`boolean` also takes "true"/"false" text)."""
    if value is True or value is False:
        return value
    raise InvalidValue("must be a JSON boolean, true or false (not text, not 0/1)")


_ISO_FORMS = "use e.g. '2024-05-01T12:30:00' (UTC) or '2024-05-01T15:30:00+03:00'"


def iso_timestamp_value(value: Any) -> datetime:
    """A naive UTC datetime from any ISO 8601 text Python reads (`Z` or an offset converted
    to UTC) or a datetime; years 1-9999 once in UTC."""
    if isinstance(value, datetime):
        return utc_naive(value)
    if not isinstance(value, str):
        raise InvalidValue(f"must be an ISO 8601 string; {_ISO_FORMS}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValue(
            f"{shown(value, 40)!r} is not an ISO 8601 timestamp; {_ISO_FORMS}"
        ) from None
    return utc_naive(moment)
