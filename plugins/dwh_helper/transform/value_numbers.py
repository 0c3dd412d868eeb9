"""Integers, doubles, booleans, uuids and IP addresses in the value layer."""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable
from typing import Any

from dwh_helper.transform.value_text import InvalidValue, json_kind

INT_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
"""Inclusive range of each integer kind."""


# -- integers and floats ----------------------------------------------------------------------

ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def integer_number(value: Any, kind: str = "bigint") -> int:
    """The integer of a value for an integer `kind` (integer, bigint, uint64), range checked."""
    low, high = INT_RANGES[kind]
    if value.__class__ is int:
        number = value
    elif isinstance(value, str):
        if not ASCII_INT.fullmatch(value):
            raise InvalidValue("not an integer (ASCII digits with an optional sign)")
        number = int(value)
    elif isinstance(value, float) and not isinstance(value, bool):
        if not (value.is_integer() and abs(value) < 2**53):
            raise InvalidValue("not a whole number")
        number = int(value)
    elif isinstance(value, bool):
        raise InvalidValue("a boolean is not an integer")
    elif isinstance(value, int):
        number = int(value)
    else:
        raise InvalidValue(f"expected an integer, got {json_kind(value)}")
    if not low <= number <= high:
        raise InvalidValue(f"out of range for {kind} ({low}..{high})")
    return number


def integer(kind: str) -> Callable[[Any], str]:
    """The COPY text function of an integer kind (integer, bigint, uint64)."""

    def cast(value: Any) -> str:
        return str(integer_number(value, kind))

    cast.__name__ = kind
    return cast


bigint = integer("bigint")
int4 = integer("integer")
uint64 = integer("uint64")


def double_number(value: Any) -> float:
    """A finite double from a JSON number or an ASCII decimal string."""
    if isinstance(value, bool):
        raise InvalidValue("a boolean is not a number")
    if isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        if not _ASCII_FLOAT.fullmatch(value):
            raise InvalidValue("not a number (ASCII decimal, e.g. -1.5 or 2e10)")
        number = float(value)
        if number == 0.0 and any(c in "123456789" for c in value.split("e")[0].split("E")[0]):
            raise InvalidValue("too small for double precision (would round to 0)")
    else:
        raise InvalidValue(f"expected a number, got {json_kind(value)}")
    if not math.isfinite(number):
        raise InvalidValue("not a finite number (out of range for double precision)")
    return number


def double(value: Any) -> str:
    """COPY text of a double precision column (the shortest text that reads back the same)."""
    return repr(double_number(value))


# -- booleans -----------------------------------------------------------------------------

_BOOLEANS = {"true": "t", "false": "f", "True": "t", "False": "f"}
_LOOSE_BOOLEANS = {"true": "t", "1": "t", "yes": "t", "false": "f", "0": "f", "no": "f"}


def boolean(value: Any) -> str:
    """COPY text (t/f) of a boolean column: JSON true/false or "true"/"false"/"True"/"False"."""
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, str) and value in _BOOLEANS:
        return _BOOLEANS[value]
    raise InvalidValue("not a boolean (true or false)")


def loose_boolean(value: Any) -> str:
    """COPY text (t/f) of an AppMetrica boolean: true/false, 1/0 or yes/no, any case."""
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, str):
        found = _LOOSE_BOOLEANS.get(value.strip().lower())
        if found is not None:
            return found
    raise InvalidValue("expected true/false or 1/0")


def loose_boolean_value(value: Any) -> bool:
    """`loose_boolean` as a Python bool."""
    return loose_boolean(value) == "t"


# -- identifiers and addresses --------------------------------------------------------------

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
is_uuid = _UUID.fullmatch
"""Whether a string is a uuid this layer accepts (a match object or None)."""


def uuid(value: Any) -> str:
    """COPY text of a uuid column: 32 hex digits, dashes optional in the usual places."""
    if isinstance(value, str) and _UUID.fullmatch(value):
        return value
    raise InvalidValue("not a uuid")


_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)


def inet(value: Any) -> str:
    """COPY text of an inet column: an IPv4 or IPv6 address (no prefix length)."""
    if not isinstance(value, str) or not value.isascii():
        raise InvalidValue("not an IP address")
    if _IPV4.fullmatch(value):
        return value
    try:
        socket.inet_pton(socket.AF_INET6, value)  # C parser, as strict as PostgreSQL's inet
    except (OSError, ValueError):
        raise InvalidValue("not an IP address") from None
    return value
