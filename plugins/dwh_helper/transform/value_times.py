"""Timestamps in the value layer: Amplitude's forms, AppMetrica's Unix seconds and datetimes."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dwh_helper.transform.value_numbers import ASCII_INT
from dwh_helper.transform.value_text import InvalidValue

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
            return utc_naive(value).isoformat(sep=" ")
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


def utc_naive(moment: datetime) -> datetime:
    """`moment` as a naive UTC datetime (a naive one is taken as UTC); InvalidValue when it
    leaves years 1-9999 once converted to UTC."""
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise InvalidValue(
            f"{moment.isoformat()} is outside years 1-9999 once converted to UTC"
        ) from None


def timestamp_value(value: Any) -> datetime:
    """`timestamp` as a naive UTC datetime."""
    return datetime.fromisoformat(timestamp(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31 23:59:59


def unix_seconds_value(value: Any) -> datetime:
    """An aware UTC datetime from Unix seconds (ASCII digits, optional sign)."""
    if isinstance(value, str):
        if not ASCII_INT.fullmatch(value):
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
