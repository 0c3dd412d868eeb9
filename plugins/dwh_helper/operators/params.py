"""Templated operator arguments → typed values: the one place every operator and plan task uses.

With `render_template_as_native_obj=True` a templated argument arrives as the Param's own type
(`True`, `5000`, `["web"]`, `None`), but an operator built by hand or a DAG without native
rendering passes text (`"True"`, `"5000"`, `"web, mobile"`, `""`, `"None"`). Each function here
accepts every one of these shapes and returns one type. A value that fits none raises
`AirflowFailException` (a retry would render the same value) naming the argument and what to
set instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

MAX_DAYS_PER_RUN = 366
"""Most days one run may load (a longer backfill is split into several runs)."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_UNSET = frozenset({"", "none", "null"})


def bad_param(name: str, value: Any, expected: str) -> AirflowFailException:
    """The error of an argument that cannot be used: its name, the value, what to set."""
    return AirflowFailException(f"{name} must be {expected}, got {value!r}")


def optional_text(value: Any) -> str | None:
    """A text argument, or None when unset (an unset Param renders as "", "None" or "null")."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _UNSET else text


def as_bool(value: Any, name: str, *, default: bool = False) -> bool:
    """true/false from a bool, 1/0, or text (true/false, yes/no, on/off, 1/0); unset = `default`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = optional_text(value)
    if text is None:
        return default
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise bad_param(name, value, "true or false")


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer from an int or its decimal text, at least `minimum` when given."""
    if isinstance(value, bool):
        raise bad_param(name, value, "an integer")
    if isinstance(value, int):
        number = value
    else:
        text = optional_text(value)
        try:
            number = int(text or "")
        except ValueError:
            raise bad_param(name, value, "an integer") from None
    if minimum is not None and number < minimum:
        raise bad_param(name, value, f"an integer of at least {minimum}")
    return number


def optional_int(value: Any, name: str, *, minimum: int | None = None) -> int | None:
    """`as_int`, or None when the argument is unset."""
    if optional_text(value) is None:
        return None
    return as_int(value, name, minimum=minimum)


def as_list(value: Any, name: str, *, choices: Iterable[str] | None = None) -> list[str]:
    """Strings from a list/tuple or comma-separated text (unset = []), each one of `choices`."""
    if isinstance(value, str) or value is None:
        text = optional_text(value) or ""
        items = [item.strip() for item in text.split(",")]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        items = [str(item).strip() for item in value]
    else:
        raise bad_param(name, value, "a list or comma-separated text")
    items = [item for item in items if item]
    if choices is not None:
        allowed = list(choices)
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise bad_param(name, unknown, f"a list of {', '.join(allowed)}")
    return items


def as_day(value: Any, name: str) -> date:
    """A UTC day from a date, a datetime, YYYY-MM-DD or ISO timestamp text (as `{{ ds }}` or
    `{{ data_interval_start }}` render); an aware timestamp counts in UTC."""
    if not isinstance(value, date):
        text = optional_text(value) or ""
        try:
            value = date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
        except ValueError:
            raise bad_param(name, value, "a date (YYYY-MM-DD)") from None
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).date()
    return value


def optional_day(value: Any, name: str) -> date | None:
    """`as_day`, or None when the argument is unset."""
    return None if optional_text(value) is None else as_day(value, name)


def optional_moment(value: Any, name: str) -> date | datetime | None:
    """A whole day (YYYY-MM-DD) or an exact ISO timestamp; None when unset."""
    if isinstance(value, date) or value is None:
        return value
    text = optional_text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise bad_param(name, value, "a date (YYYY-MM-DD) or an ISO timestamp") from None


def day_range(start: Any, end: Any, *, default: date) -> list[date]:
    """The days `start`..`end` (inclusive; `end` defaults to `start`), else [`default`]."""
    first = optional_day(start, "params: start")
    if first is None:
        first = last = default
    else:
        last = optional_day(end, "params: end") or first
    if last < first:
        raise AirflowFailException(
            f"params: end ({last}) is before start ({first}); set end on or after start"
        )
    days = (last - first).days + 1
    if days > MAX_DAYS_PER_RUN:
        raise AirflowFailException(
            f"params: {days} days requested; at most {MAX_DAYS_PER_RUN} per run — split the range"
        )
    return [first + timedelta(days=offset) for offset in range(days)]
