"""Text in the value layer: the errors, NUL repair, storable text for reports, COPY escaping."""

from __future__ import annotations

import math
from typing import Any

SHOWN_CHARS = 200
"""How much of a value a report keeps."""


class InvalidValue(ValueError):
    """A value of a kind is not valid; `reason` says why (the caller names the column)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefusedValue(InvalidValue):
    """An invalid value with its column (and table): the message names both and the value."""

    def __init__(self, column: str, value: Any, reason: str, table: str | None = None) -> None:
        where = f"{table}.{column}" if table else column
        ValueError.__init__(self, f"{where}: {reason} (value {shown(value)})")
        self.reason, self.column, self.value, self.table = reason, column, value, table

    def without_value(self) -> str:
        """The message without the value (for logs and load_log.error)."""
        where = f"{self.table}.{self.column}" if self.table else self.column
        return f"{where}: {self.reason}"


class Repairs:
    """Counts values changed to be storable (NUL removed)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as a short, storable text for messages and reports (NUL and surrogates escaped)."""
    text = value if isinstance(value, str) else _repr(value)
    text = safe_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _repr(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return repr(value)


def safe_text(text: str) -> str:
    """`text` storable as is: NUL shown as `\\u0000`, lone surrogates as `\\udXXX` escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def safe_json(value: Any) -> Any:
    """A JSON-like value with every string (and key) made storable by `safe_text`."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return safe_text(_repr(value))
    return value


# -- COPY text escaping --------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_escape(text: str) -> str:
    """Escape a string for a COPY text field (backslash, tab, newline, carriage return)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


# -- text -----------------------------------------------------------------------------------


def clean_text(value: str, repairs: Repairs | None = None) -> str:
    """A string PostgreSQL stores unchanged: NUL removed (counted), lone surrogates refused."""
    if "\x00" in value:
        value = value.replace("\x00", "")
        if repairs is not None:
            repairs.count += 1
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(
            "not valid Unicode (a lone surrogate or bytes that are not UTF-8)"
        ) from None
    return value


def json_kind(value: Any) -> str:
    """What JSON calls a value's kind, for messages ("a JSON object", "null")."""
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, int | float):
        return "a JSON number"
    if value is None:
        return "null"
    return type(value).__name__
