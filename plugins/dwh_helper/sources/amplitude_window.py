"""Amplitude export windows: ranges of whole UTC hours, as `start`/`end` of /export mean them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dwh_helper.sources.date_params import HOUR as HOUR_PARAM
from dwh_helper.sources.date_params import parse_moment

HOUR = timedelta(hours=1)
#: Amplitude makes an hour exportable about this long after it ends.
DATA_DELAY = timedelta(hours=2)
#: The API accepts at most 365 days per request; longer windows are split first.
MAX_WINDOW_HOURS = 365 * 24
PARAM_FORMAT = "%Y%m%dT%H"


@dataclass(frozen=True)
class ExportWindow:
    """A range of whole UTC hours, both ends inclusive (what `start`/`end` of /export mean)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime):
                raise TypeError(f"ExportWindow.{name} must be a datetime, got {value!r}")
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(
                    f"ExportWindow.{name}={value.isoformat()} is naive: "
                    "pass a tz-aware UTC datetime (tzinfo=datetime.UTC)"
                )
            if (value.minute, value.second, value.microsecond) != (0, 0, 0):
                raise ValueError(
                    f"ExportWindow.{name}={value.isoformat()} is not a whole hour: "
                    "Amplitude exports whole UTC hours (minute=second=0)"
                )
            object.__setattr__(self, name, value.astimezone(UTC))
        if self.end < self.start:
            raise ValueError(
                f"ExportWindow end {self.end:%Y-%m-%dT%H} is before start {self.start:%Y-%m-%dT%H}"
            )

    @classmethod
    def for_day(cls, day: date) -> ExportWindow:
        """The 24 hours of one UTC day: T00..T23."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return cls(start, start + 23 * HOUR)

    @classmethod
    def from_params(cls, start: str, end: str) -> ExportWindow:
        """Parse the API's `start`/`end` query values (`YYYYMMDDTHH`)."""
        first = parse_moment(start, "start", formats=HOUR_PARAM).replace(tzinfo=UTC)
        last = parse_moment(end, "end", formats=HOUR_PARAM).replace(tzinfo=UTC)
        return cls(first, last)

    def hours(self) -> int:
        """How many hours the window covers (1 for a single hour)."""
        return (self.end - self.start) // HOUR + 1

    def ends_at(self) -> datetime:
        """The instant the window's last hour ends (exclusive end)."""
        return self.end + HOUR

    def split(self) -> tuple[ExportWindow, ExportWindow]:
        """The two halves (the first gets the smaller half of an odd count)."""
        total = self.hours()
        if total < 2:
            raise ValueError(f"window {self.label()} is a single hour and cannot be split")
        first_hours = total // 2
        return (
            ExportWindow(self.start, self.start + (first_hours - 1) * HOUR),
            ExportWindow(self.start + first_hours * HOUR, self.end),
        )

    def params(self) -> dict[str, str]:
        """The /export query parameters: `{"start": "YYYYMMDDTHH", "end": "YYYYMMDDTHH"}`."""
        return {
            "start": self.start.strftime(PARAM_FORMAT),
            "end": self.end.strftime(PARAM_FORMAT),
        }

    def label(self) -> str:
        """`YYYYMMDDTHH-YYYYMMDDTHH`, for logs, file names and keys."""
        return f"{self.start:%Y%m%dT%H}-{self.end:%Y%m%dT%H}"

    def __str__(self) -> str:
        return self.label()


def limit_length(window: ExportWindow) -> Iterator[ExportWindow]:
    """The window in pieces of at most 365 days (the API's limit per request)."""
    start = window.start
    while start <= window.end:
        end = min(window.end, start + (MAX_WINDOW_HOURS - 1) * HOUR)
        yield ExportWindow(start, end)
        start = end + HOUR
