"""AppMetrica exports of a range of days, waited for at most a while (`/appmetrica/export`).

The polling protocol (202 → 200, 429 waits, doubling parts, never more than
`max_queued` files queued at AppMetrica) is the client's own
(`AppMetricaClient.download`); this module cuts the range into days and says
which days are ready when the wait is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from dwh_helper.sources.appmetrica import AppMetricaClient
from dwh_helper.sources.appmetrica_request import ExportRequest, PartsDownload


def day_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until] cut at midnight into per-day windows (both ends inclusive, seconds)."""
    windows = []
    start = since
    while start <= until:
        next_day = datetime.combine(start.date() + timedelta(days=1), datetime.min.time())
        end = min(until, next_day - timedelta(seconds=1))
        windows.append((start, end))
        start = next_day
    return windows


@dataclass
class DaysDownload:
    """Per-day downloads of one export; `complete` when every part of every day is on disk."""

    days: list[PartsDownload]
    complete: bool

    def ready_days(self) -> list[str]:
        """`YYYY-MM-DD` of the days fully downloaded."""
        return [_label(day) for day in self.days if day.done]

    def pending_days(self) -> list[str]:
        """`YYYY-MM-DD` of the days AppMetrica is still preparing."""
        return [_label(day) for day in self.days if not day.done]

    def files(self) -> list[Path]:
        """Every downloaded file, day by day in part order."""
        return [part.path for day in self.days for part in day.files()]


def download_days(
    client: AppMetricaClient,
    requests: Sequence[ExportRequest],
    dest_dir: Path,
    *,
    max_queued: int,
    wait_seconds: float,
) -> DaysDownload:
    """Download every request (one per day) into `dest_dir`, waiting at most `wait_seconds`.

    When the wait is over before every day is ready the result is not
    `complete`; asking again with the identical requests continues the same
    preparation at AppMetrica.
    """
    days = [PartsDownload(request) for request in requests]
    complete = client.download(days, dest_dir, max_queued=max_queued, wait_seconds=wait_seconds)
    return DaysDownload(days, complete)


def _label(day: PartsDownload) -> str:
    return f"{day.request.since:%Y-%m-%d}"
