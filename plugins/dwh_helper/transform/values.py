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
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import msgspec

MAX_JSON_DEPTH = 256
"""Deepest JSON nesting the checked path accepts. PostgreSQL takes 10,000 levels and more;
msgspec and Python's json stop near the interpreter's recursion limit (about 990 levels), and
the check itself recurses: 256 stays well inside all of them. Real event properties nest a
few levels."""

INT_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
"""Inclusive range of each integer kind."""

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


# -- integers and floats ----------------------------------------------------------------------

_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def integer_number(value: Any, kind: str = "bigint") -> int:
    """The integer of a value for an integer `kind` (integer, bigint, uint64), range checked."""
    low, high = INT_RANGES[kind]
    if value.__class__ is int:
        number = value
    elif isinstance(value, str):
        if not _ASCII_INT.fullmatch(value):
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
        raise InvalidValue(f"expected an integer, got {_json_kind(value)}")
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
        number = float(value) if abs(value) < 2**1023 else math.inf
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        if not _ASCII_FLOAT.fullmatch(value):
            raise InvalidValue("not a number (ASCII decimal, e.g. -1.5 or 2e10)")
        number = float(value)
        if number == 0.0 and any(c in "123456789" for c in value.split("e")[0].split("E")[0]):
            raise InvalidValue("too small for double precision (would round to 0)")
    else:
        raise InvalidValue(f"expected a number, got {_json_kind(value)}")
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


# -- timestamps -----------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_PLAIN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?")
_valid_days: dict[str, bool] = {}
_PLAIN_LENGTHS = frozenset({19, 26})
_fromisoformat = datetime.fromisoformat


def _valid_day(day: str) -> bool:
    known = _valid_days.get(day)
    if known is None:
        try:
            date(int(day[:4]), int(day[5:7]), int(day[8:10]))
            known = True
        except ValueError:
            known = False
        if len(_valid_days) > 100_000:
            _valid_days.clear()
        _valid_days[day] = known
    return known


_TIMESTAMP_FORMS = "expected 'YYYY-MM-DD HH:MM:SS[.ffffff]' or ISO 8601 with T, Z or an offset"


def timestamp(value: Any) -> str:
    """COPY text of a `timestamp` column (naive UTC) from the forms Amplitude emits."""
    if value.__class__ is not str:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(sep=" ")
        raise InvalidValue(f"not a timestamp string ({_TIMESTAMP_FORMS})")
    if (  # the common case, Amplitude's own form: C-level checks, passed as is
        len(value) in _PLAIN_LENGTHS
        and value[10] == " "
        and value[4] == "-"
        and value[7] == "-"
        and value[13] == ":"
        and value[16] == ":"
        and (len(value) == 19 or value[19] == ".")
        and value.isascii()
    ):
        try:
            _fromisoformat(value)  # digits, ranges (no hour 24, no second 60), valid day
            return value
        except ValueError:
            pass
    if _PLAIN.fullmatch(value):  # no zone, other fractions, or T: checked and passed on
        if _valid_day(value[:10]) and value[11:13] < "24" and value[14] < "6" and value[17] < "6":
            return value if value[10] == " " else value[:10] + " " + value[11:]
        raise InvalidValue(f"not a valid date or time of day ({_TIMESTAMP_FORMS})")
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise InvalidValue(f"not a timestamp ({_TIMESTAMP_FORMS})")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
        )
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            if hours > 15 or minutes > 59:
                raise InvalidValue(f"not a valid UTC offset ({_TIMESTAMP_FORMS})")
            moment -= sign * timedelta(hours=hours, minutes=minutes)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, InvalidValue):
            raise
        raise InvalidValue(f"not a valid date or time of day ({_TIMESTAMP_FORMS})") from None
    return moment.isoformat(sep=" ")


def timestamp_value(value: Any) -> datetime:
    """`timestamp` as a naive UTC datetime."""
    return datetime.fromisoformat(timestamp(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31 23:59:59


def unix_seconds_value(value: Any) -> datetime:
    """An aware UTC datetime from Unix seconds (ASCII digits, optional sign)."""
    if isinstance(value, str):
        if not _ASCII_INT.fullmatch(value):
            raise InvalidValue("expected Unix seconds (an integer)")
        seconds = int(value)
    elif value.__class__ is int:
        seconds = value
    else:
        raise InvalidValue("expected Unix seconds (an integer)")
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise InvalidValue("Unix seconds out of range (years 1..9999)")
    return _EPOCH + timedelta(seconds=seconds)


def unix_seconds(value: Any) -> str:
    """COPY text of a `timestamptz` column from Unix seconds: 'YYYY-MM-DD HH:MM:SS+00'."""
    return unix_seconds_value(value).isoformat(sep=" ").replace("+00:00", "+00")


_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def plain_datetime(value: Any) -> str:
    """COPY text of a `timestamp` column from AppMetrica's 'YYYY-MM-DD hh:mm:ss' (as is)."""
    if not isinstance(value, str) or not _DATETIME.fullmatch(value):
        raise InvalidValue("expected 'YYYY-MM-DD hh:mm:ss'")
    if not (_valid_day(value[:10]) and value[11:13] < "24" and value[14] < "6" and value[17] < "6"):
        raise InvalidValue("expected 'YYYY-MM-DD hh:mm:ss' (not a valid date or time of day)")
    return value


def plain_datetime_value(value: Any) -> datetime:
    """`plain_datetime` as a naive datetime."""
    return datetime.fromisoformat(plain_datetime(value))


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


_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(raw: str) -> int:
    """How deep a JSON text nests (strings skipped)."""
    depth = deepest = 0
    for token in _STRUCTURE.finditer(raw):
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


def clean_json(value: Any, repairs: Repairs | None = None, depth: int = 0) -> Any:
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
    try:
        cleaned = _clean(parse_json(raw), local, 0)
    except RecursionError:
        raise InvalidValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if local.count:
        if repairs is not None:
            repairs.count += 1
        return _encode(cleaned).decode()
    return raw


def json_text(raw: str | bytes, repairs: Repairs | None = None) -> str:
    """COPY text of a jsonb column from a JSON text (see `clean_json_text`)."""
    return copy_escape(clean_json_text(raw, repairs))


def _json_kind(value: Any) -> str:
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
