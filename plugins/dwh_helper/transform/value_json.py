"""JSON in the value layer: depth and number range checked, NUL removed from strings and keys."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

from dwh_helper.transform.value_text import InvalidValue, Repairs, clean_text, copy_escape

MAX_JSON_DEPTH = 256
"""Deepest JSON nesting the checked path accepts. PostgreSQL takes 10,000 levels and more;
msgspec and Python's json stop near the interpreter's recursion limit (about 990 levels), and
the check itself recurses: 256 stays well inside all of them. Real event properties nest a
few levels."""


# -- JSON ---------------------------------------------------------------------------------------


class _BadNumber:
    """A JSON number this layer refuses, kept until the value is checked."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")
NUMERIC_MAX_INTEGER_DIGITS = 131072
NUMERIC_MAX_SCALE = 16383


def json_number_reason(number: str) -> str | None:
    """Why PostgreSQL's numeric (what jsonb stores numbers as) would refuse a JSON number
    text, or None when it takes it: at most 131072 digits before the point and 16383 after."""
    match = _NUMBER.fullmatch(number)
    if match is None:
        return "not a JSON number"
    whole, fraction, exponent = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return None  # zero, however written
    if len(exponent or "") > 7:
        return "a number out of range for PostgreSQL (exponent too large)"
    shift = int(exponent or 0)
    integer_digits = (
        len(whole.lstrip("0")) + shift
        if whole.lstrip("0")
        else shift - (len(fraction) - len(fraction.lstrip("0")))
    )
    if integer_digits > NUMERIC_MAX_INTEGER_DIGITS:
        return "a number out of range for PostgreSQL (too large)"
    if len(fraction) - shift > NUMERIC_MAX_SCALE:
        return "a number out of range for PostgreSQL (too many decimal places)"
    return None


def _json_number(text: str) -> Any:
    """A JSON number of `parse_json`: an int or float when one holds it exactly enough (a
    float reads back the same double), else kept as written (msgspec writes Raw verbatim)
    when PostgreSQL takes it, else a refusal."""
    reason = json_number_reason(text)
    if reason is not None:
        return _BadNumber(reason)
    if "." not in text and "e" not in text and "E" not in text:
        number = int(text)
        if -(2**63) <= number < 2**64:
            return number
        return msgspec.Raw(text.encode())
    number = float(text)
    if math.isfinite(number) and (number != 0.0 or not text.lstrip("-0.").strip("eE+-0")):
        return number
    return msgspec.Raw(text.encode())


def _json_constant(name: str) -> Any:
    return _BadNumber(f"{name} is not JSON")


JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
"""A JSON text's strings and brackets, in order (what depth scanners walk)."""


def json_depth(raw: str) -> int:
    """How deep a JSON text nests (strings skipped)."""
    depth = deepest = 0
    for token in JSON_TOKENS.finditer(raw):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_depth(raw: str) -> None:
    if raw.count("[") + raw.count("{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def parse_json(raw: str | bytes) -> Any:
    """A JSON text decoded with this layer's checks (depth; numbers kept for `json_value`)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw).decode("utf-8", "surrogateescape")
    _check_depth(raw)
    try:
        return json.loads(
            raw, parse_float=_json_number, parse_int=_json_number, parse_constant=_json_constant
        )
    except RecursionError:
        raise InvalidValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidValue(f"not valid JSON ({exc})") from None


def clean_json(value: Any, repairs: Repairs | None = None) -> Any:
    """A decoded JSON value checked (depth, numbers, text rule on strings and keys); NUL
    removed from strings and keys (counted once per value)."""
    local = Repairs()
    try:
        cleaned = _clean(value, local, 0)
    except RecursionError:
        raise InvalidValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if local.count and repairs is not None:
        repairs.count += 1
    return cleaned


_encode = msgspec.json.Encoder().encode


def _clean(value: Any, repairs: Repairs, depth: int) -> Any:
    kind = value.__class__
    if kind is str:
        return clean_text(value, repairs)
    if kind is int or kind is bool or value is None:
        if kind is int and not -(2**63) <= value < 2**64:
            reason = json_number_reason(str(value))
            if reason is not None:
                raise InvalidValue(reason)
            return msgspec.Raw(str(value).encode())
        return value
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue("a number out of range (not finite)")
        return value
    if kind is msgspec.Raw:  # a number parse_json kept as written
        return value
    if kind is _BadNumber:
        raise InvalidValue(value.reason)
    if depth >= MAX_JSON_DEPTH:
        raise InvalidValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if kind is dict:
        return {
            clean_text(str(k), repairs): _clean(v, repairs, depth + 1) for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [_clean(v, repairs, depth + 1) for v in value]
    if isinstance(value, bool | int | float | str | dict | list):  # subclasses
        return _clean(json.loads(json.dumps(value)), repairs, depth)
    raise InvalidValue(f"not a JSON value ({type(value).__name__})")


def json_value(value: Any, repairs: Repairs | None = None) -> str:
    """COPY text of a jsonb column from a decoded JSON value (compact JSON, UTF-8 kept)."""
    return copy_escape(_encode(clean_json(value, repairs)).decode())


_NEEDS_JSON_CHECK = re.compile(r"\\u|[0-9][eE][+-]?[0-9]{4}|NaN|Infinity")


def json_needs_check(raw: str) -> bool:
    """Whether a JSON text must be decoded to be checked: escapes (NUL, surrogates), numbers
    with a 4-digit exponent, NaN/Infinity, more brackets than the depth limit, or a long
    text."""
    return (
        _NEEDS_JSON_CHECK.search(raw) is not None
        or raw.count("[") + raw.count("{") > MAX_JSON_DEPTH
        or len(raw) > 4000
    )


def clean_json_text(raw: str | bytes, repairs: Repairs | None = None) -> str:
    """A JSON text checked: kept as written when valid as is, re-encoded (compact) when a NUL
    had to be removed; InvalidValue when not valid JSON or beyond this layer's limits."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("not valid UTF-8") from None
    if not json_needs_check(raw):
        try:
            msgspec.json.decode(raw)
            return raw
        except (msgspec.DecodeError, RecursionError):
            pass  # the checks below say why, or accept what msgspec cannot hold (1e400)
    local = Repairs()
    cleaned = clean_json(parse_json(raw), local)
    if local.count:
        if repairs is not None:
            repairs.count += 1
        return _encode(cleaned).decode()
    return raw


def json_text(raw: str | bytes, repairs: Repairs | None = None) -> str:
    """COPY text of a jsonb column from a JSON text (see `clean_json_text`)."""
    return copy_escape(clean_json_text(raw, repairs))
