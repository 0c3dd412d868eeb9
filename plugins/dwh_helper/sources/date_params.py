"""Dates and date-times written as the export APIs (theirs and ours) write them: one strict parser.

`parse_moment("20240501", "start", formats=("YYYYMMDD",))` accepts exactly the
listed formats (no one-digit months; leading and trailing spaces are ignored), optionally within
bounds, and raises `DateParamError` naming the parameter and the formats to use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta

#: Each accepted format: its exact shape, and whether it names a whole day.
_FORMATS: dict[str, tuple[re.Pattern[str], str, bool]] = {
    "YYYYMMDD": (re.compile(r"[0-9]{8}"), "%Y%m%d", True),
    "YYYYMMDDTHH": (re.compile(r"[0-9]{8}T[0-9]{2}"), "%Y%m%dT%H", False),
    "YYYY-MM-DD": (re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"), "%Y-%m-%d", True),
    "'YYYY-MM-DD HH:MM:SS'": (
        re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}"),
        "%Y-%m-%d %H:%M:%S",
        False,
    ),
}
_EXAMPLES = {
    "YYYYMMDD": "20240501",
    "YYYYMMDDTHH": "20240501T00",
    "YYYY-MM-DD": "2024-05-01",
    "'YYYY-MM-DD HH:MM:SS'": "'2024-05-01 00:00:00'",
}
DAY = ("YYYYMMDD",)
HOUR = ("YYYYMMDDTHH",)
DAY_OR_SECOND = ("YYYY-MM-DD", "'YYYY-MM-DD HH:MM:SS'")


class DateParamError(ValueError):
    """A date parameter in none of the accepted formats, or out of bounds; `name` says which."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def parse_moment(
    value: str,
    name: str,
    *,
    formats: Sequence[str],
    end_of_day: bool = False,
    earliest: date | None = None,
    latest: date | None = None,
) -> datetime:
    """`value` in one of `formats` as a naive datetime; a day is its start (its last second
    with `end_of_day`). Raises `DateParamError` outside `earliest`..`latest` (inclusive)."""
    text = value.strip() if isinstance(value, str) else ""
    moment = None
    for shape in formats:
        pattern, layout, whole_day = _FORMATS[shape]
        if not pattern.fullmatch(text):
            continue
        try:
            # the date-time shape takes a space or a T between date and time
            candidate = text[:10] + " " + text[11:] if ":" in layout else text
            moment = datetime.strptime(candidate, layout)
        except ValueError:
            break
        if whole_day and end_of_day:
            moment += timedelta(days=1, seconds=-1)
        break
    bounds = ""
    if earliest is not None and latest is not None:
        bounds = f" between {earliest:%Y-%m-%d} and {latest:%Y-%m-%d}"
    if moment is not None:
        too_early = earliest is not None and moment.date() < earliest
        too_late = latest is not None and moment.date() > latest
        if not (too_early or too_late):
            return moment
    raise DateParamError(
        name,
        f"{name}={str(value)[:40]!r}: use {' or '.join(formats)}{bounds}, "
        f"e.g. {_EXAMPLES[formats[0]]}",
    )
