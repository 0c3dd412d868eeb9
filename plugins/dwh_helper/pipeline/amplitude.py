"""Amplitude steps: export one UTC day to S3 unchanged, and load a raw archive into the DWH."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from dwh_helper.dwh.repository import Repository
from dwh_helper.pipeline.load import (
    DEFAULT_BATCH_SIZE,
    CorruptFile,
    LoadResult,
    RawFormat,
    load_raw_file,
)
from dwh_helper.sources.amplitude import AmplitudeClient
from dwh_helper.sources.amplitude_archive import iter_lines
from dwh_helper.sources.amplitude_errors import ArchiveError
from dwh_helper.sources.amplitude_window import ExportWindow
from dwh_helper.storage.s3 import ObjectStore, file_sha256
from dwh_helper.transform.event_mapping import EventMapping, amplitude_mapping

log = logging.getLogger(__name__)

RAW_PREFIX = "raw/amplitude"


def day_prefix(source: str, day: date) -> str:
    """S3 prefix of one source's raw archives for one UTC day."""
    return f"{RAW_PREFIX}/{source}/{day:%Y/%m/%d}/"


def archive_key(source: str, window: ExportWindow) -> str:
    """Deterministic S3 key of an exported window: the whole day, or the hours it covers."""
    day = window.start.date()
    name = f"{source}_{day:%Y%m%d}"
    if window != ExportWindow.for_day(day):
        name += f"_{window.start:%H}-{window.end:%H}"
    return f"{day_prefix(source, day)}{name}.zip"


@dataclass
class ExtractResult:
    """What `extract_amplitude` landed in S3."""

    source: str
    day: date
    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    empty_hours: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (XCom, logs)."""
        return {
            "source": self.source,
            "day": self.day.isoformat(),
            "keys": list(self.keys),
            "bytes": self.bytes,
            "empty_hours": self.empty_hours,
            "seconds": round(self.seconds, 3),
        }


def extract_amplitude(
    client: AmplitudeClient, store: ObjectStore, source: str, day: date
) -> ExtractResult:
    """Export one UTC day and land the archive(s) in S3 byte for byte; a re-run overwrites them.

    Keys are deterministic (see `archive_key`); objects of earlier runs under the
    day's prefix that this run did not write are removed, so the prefix always
    mirrors the latest export. An empty day lands nothing and says so.
    """
    started = time.perf_counter()
    window = ExportWindow.for_day(day)
    result = ExtractResult(source=source, day=day)
    with tempfile.TemporaryDirectory(prefix=f"amplitude-{source}-") as tmp:
        exported = client.export(window, Path(tmp))
        result.empty_hours = sum(empty.hours() for empty in exported.empty_windows)
        for file in exported.files:
            key = archive_key(source, file.window)
            store.upload_file(
                file.path,
                key,
                metadata={
                    "source": source,
                    "window-start": file.window.start.isoformat(),
                    "window-end": file.window.end.isoformat(),
                    "size": str(file.size),
                    "sha256": file.sha256 or file_sha256(file.path),
                },
                content_type="application/zip",
            )
            result.keys.append(key)
            result.bytes += file.size
    if result.keys:
        for stale in store.iter_objects(day_prefix(source, day)):
            if stale.key not in result.keys:
                store.delete(stale.key)
                log.info("removed %s, left by an earlier export of the same day", stale.key)
    else:
        log.warning("Amplitude %s has no events for %s: nothing landed in S3", source, day)
    result.seconds = time.perf_counter() - started
    log.info(
        "extracted Amplitude %s %s: %d archive(s), %d bytes, %d empty hour(s) in %.1fs",
        source,
        day,
        len(result.keys),
        result.bytes,
        result.empty_hours,
        result.seconds,
    )
    return result


def day_keys(store: ObjectStore, source: str, day: date) -> list[str]:
    """The raw archives already in S3 for one source and day (for re-loads without Amplitude)."""
    return sorted(info.key for info in store.iter_objects(day_prefix(source, day)))


def _records(path: Path):  # noqa: ANN202 - an iterator of (entry, line, bytes)
    try:
        for raw in iter_lines(path):
            yield raw.entry, raw.line, raw.data
    except ArchiveError as exc:
        raise CorruptFile(str(exc)) from exc


def _month_of(record: Any) -> str | None:
    value = getattr(record, "f_event_time", None)
    return value[:7] if isinstance(value, str) and len(value) >= 7 else None


AMPLITUDE_FORMAT = RawFormat(
    source="amplitude",
    records=_records,
    month_of=_month_of,
)
"""Amplitude export archives: ZIP of gzip NDJSON entries, one event per line."""


def load_amplitude_file(
    store: ObjectStore,
    key: str,
    repo: Repository,
    mapping: EventMapping | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reject_ratio: float = 0.01,
    reload: bool = False,
    temp_dir: Path | None = None,
) -> LoadResult:
    """Load one raw Amplitude archive from S3 into the six event tables (one transaction).

    The window's months and the month before get their events_part partitions first (a short
    transaction of their own, see `window_months`); late events of other months make the
    loader create theirs before sending them.
    """
    info = store.head(key)
    window = None
    if info is not None and info.metadata and "window-start" in info.metadata:
        window = (
            datetime.fromisoformat(info.metadata["window-start"]),
            datetime.fromisoformat(info.metadata["window-end"]),
        )
    return load_raw_file(
        store,
        key,
        repo,
        mapping or amplitude_mapping(),
        AMPLITUDE_FORMAT,
        batch_size=batch_size,
        reject_ratio=reject_ratio,
        window=window,
        info=info,
        reload=reload,
        temp_dir=temp_dir,
        months=window_months(window) if window else (),
    )


def window_months(window: tuple[datetime, datetime]) -> list[date]:
    """The months whose events_part partitions a window's load creates up front: the window's
    own and the one before its start. Amplitude exports by upload time, so a day carries late
    events of earlier days, and at the start of a month those are the previous month's; a
    record of a month without a partition costs the load a second pass (see `load_raw_file`)."""
    first = window[0].date().replace(day=1)
    before = (first - timedelta(days=1)).replace(day=1)
    return [before, first, window[1].date().replace(day=1)]
