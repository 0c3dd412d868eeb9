"""PostgreSQL COPY text format: escaping and formatting of Python values.

The pipelines format rows as COPY text themselves so that the database
thread only ships bytes: the Python work of one batch overlaps the server's
work on the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import msgspec

_encode_json = msgspec.json.Encoder().encode

NULL = "\\N"
"""COPY's text for NULL."""

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class CopyDialect:
    """How COPY text lines are written: the NULL marker and the field delimiter."""

    null: str = NULL
    delimiter: str = "\t"


TEXT = CopyDialect()
"""COPY's own defaults: NULL as \\N, fields separated by tabs."""


def escape(text: str) -> str:
    """Escape a string for a COPY text field (backslash, tab, newline, carriage return)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def json_text(value: Any) -> str:
    """A JSON value as an escaped COPY field (compact, UTF-8 kept as is)."""
    return escape(_encode_json(value).decode())


def format_value(value: Any) -> str:
    """Any Python value the DWH stores, as a COPY text field."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json_text(value)
    return escape(str(value))


def copy_line(values: Sequence[Any]) -> str:
    """One COPY text line (without the newline) for a row of Python values."""
    return "\t".join(map(format_value, values))
