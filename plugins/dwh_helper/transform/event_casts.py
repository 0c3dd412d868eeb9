"""The Amplitude mapping's casts: one raw JSON value → one COPY text field, from the value layer.

The fast path's casts raise `NeedsCheck` for a value the checked path must see (a NUL to
remove and count, a value to repair); the checked path (`event_mapping.TableMapper`) then
maps the record value by value with the column's policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from dwh_helper.dwh.copy_text import NULL, escape
from dwh_helper.transform import values
from dwh_helper.transform.values import InvalidValue, Repairs

Caster = Callable[[Any], str]


def cast_text(value: Any) -> str:
    """Fast path text: NeedsCheck for a NUL (the checked path removes and counts it)."""
    if value.__class__ is str:
        if "\x00" in value:
            raise NeedsCheck("a NUL in a text value")
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return escape(value)
        return value
    return unrepaired(values.text, value)


def cast_json(value: Any) -> str:
    return unrepaired(values.json_value, value)


def unrepaired(cast: Callable[..., str], value: Any) -> str:
    """`cast(value)`, or NeedsCheck when it had to repair the value (to be counted)."""
    repairs = Repairs()
    text = cast(value, repairs)
    if repairs.count:
        raise NeedsCheck("a value to repair")
    return text


def raw_json_checked(value: Any, repairs: Repairs | None = None) -> str:
    """A JSON field of the checked path: undecoded text checked as is, or a decoded value."""
    if isinstance(value, msgspec.Raw):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("not valid UTF-8") from None
        if text == "null":
            return NULL
        return values.json_text(text, repairs)
    return values.json_value(value, repairs)


CASTERS: dict[str, Caster] = {
    "text": cast_text,
    "uuid": values.uuid,
    "bigint": values.bigint,
    "integer": values.int4,
    "double": values.double,
    "boolean": values.boolean,
    "timestamp": values.timestamp,
    "json": cast_json,
    "inet": values.inet,
}
BOUNDS = {"bigint": 2**63, "integer": 2**31}
UUID_FORM = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def raw_json(value: Any) -> str:
    """A JSON value kept undecoded (`msgspec.Raw`) as an escaped COPY field (fast path);
    NeedsCheck for a NUL escape, which only the checked path may remove and count."""
    text = bytes(value).decode()
    if text == "null":
        return NULL
    if "\\" in text:
        if "\\u0000" in text:
            raise NeedsCheck("a NUL in JSON")
        return text.translate(ESCAPES)
    return text


class Unreadable:
    """A field the checked decoder could not read (nested too deep): refused per value."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"


NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\x00]").search
ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class NeedsCheck(ValueError):
    """The fast path declines a record: the checked path must map it (never a reject itself)."""


def json_value_field(value: Any) -> str:
    """A decoded JSON value as an escaped COPY field (for fields decoded for another column)."""
    return unrepaired(values.json_value, value)
