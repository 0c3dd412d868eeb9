"""Amplitude Export API client: download raw event archives to disk, read them back as a stream.

`AmplitudeClient.export(window, dest_dir)` asks `GET /api/2/export` for whole
UTC hours and streams each 200 body to a file (memory stays flat whatever the
export's size). It retries transient faults (429, 5xx, connection errors,
timeouts, a 200 whose body is not a complete ZIP) with exponential backoff and
full jitter, honouring `Retry-After`; treats 404 as an empty window; splits a
window answered with 400/504 ("over 4 GB") in halves down to one hour; and
fails fast, saying what to fix, on bad credentials.

`iter_lines` / `iter_events` read a downloaded archive entry by entry in
(day, hour, part) order, decompressing each gzip entry as a stream.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import logging
import random
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from dwh_helper.config import AmplitudeSettings

log = logging.getLogger(__name__)

US_BASE_URL = "https://amplitude.com"
EU_BASE_URL = "https://analytics.eu.amplitude.com"
REGION_BASE_URLS = {"us": US_BASE_URL, "eu": EU_BASE_URL}
EXPORT_PATH = "/api/2/export"

HOUR = timedelta(hours=1)
#: Amplitude makes an hour exportable about this long after it ends.
DATA_DELAY = timedelta(hours=2)
#: The API accepts at most 365 days per request; longer windows are split first.
MAX_WINDOW_HOURS = 365 * 24

_CHUNK = 1024 * 1024
_READ_CHUNK = 256 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_PARAM_FORMAT = "%Y%m%dT%H"
_ENTRY_NAME = re.compile(r"(?:^|/)(?:\d+_)?(\d{4}-\d{2}-\d{2})_(\d{1,2})#(\d+)\.json(?:\.gz)?$")


# --------------------------------------------------------------------------- windows


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
        try:
            first = datetime.strptime(start, _PARAM_FORMAT).replace(tzinfo=UTC)
            last = datetime.strptime(end, _PARAM_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(
                f"start={start!r} end={end!r}: expected YYYYMMDDTHH, e.g. 20240302T00"
            ) from None
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
            "start": self.start.strftime(_PARAM_FORMAT),
            "end": self.end.strftime(_PARAM_FORMAT),
        }

    def label(self) -> str:
        """`YYYYMMDDTHH-YYYYMMDDTHH`, for logs, file names and keys."""
        return f"{self.start:%Y%m%dT%H}-{self.end:%Y%m%dT%H}"

    def __str__(self) -> str:
        return self.label()


@dataclass(frozen=True)
class ExportedFile:
    """One archive written by `export`: where it is, which hours it holds, its size."""

    path: Path
    window: ExportWindow
    size: int
    sha256: str = ""


@dataclass
class ExportResult:
    """Everything one `export` call produced, in window order."""

    files: list[ExportedFile] = field(default_factory=list)
    empty_windows: list[ExportWindow] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Sum of the files' sizes."""
        return sum(item.size for item in self.files)


# --------------------------------------------------------------------------- errors


class AmplitudeError(Exception):
    """Base of the client's errors; `retryable` says whether trying later may help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class AmplitudeAuthError(AmplitudeError):
    """401/403: the project's keys or its region are wrong (fatal)."""


class AmplitudeWindowTooLarge(AmplitudeError):
    """400/504 for a single hour: that hour is over Amplitude's 4 GB export limit (fatal)."""


class AmplitudeDataNotReady(AmplitudeError):
    """The window ends less than 2 hours ago; Amplitude's data may be incomplete (fatal)."""


class AmplitudeUnavailable(AmplitudeError):
    """Transient faults persisted through every attempt; a later run may succeed."""

    retryable = True


class ArchiveError(AmplitudeError):
    """A downloaded archive is corrupt: bad ZIP, bad gzip entry or a line that is not JSON."""

    def __init__(self, message: str, *, entry: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry
        self.line = line


class _TransientResponse(Exception):
    """A response worth retrying (internal)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _SplitWindow(Exception):
    """400/504: the window must be split (internal)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


# --------------------------------------------------------------------------- client


class AmplitudeClient:
    """Export API client of one Amplitude project (one API key / secret key pair)."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        project: str = "web",
        region: str = "us",
        base_url: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if region not in REGION_BASE_URLS:
            raise ValueError(f"Amplitude region {region!r} is unknown: use 'us' or 'eu'")
        if not api_key or not secret_key:
            raise ValueError(
                f"Amplitude project {project!r} has an empty API key or secret key: "
                f"set AMPLITUDE_{project.upper()}_CLIENT_ID and "
                f"AMPLITUDE_{project.upper()}_SECRET_KEY"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.project = project
        self.region = region
        self.base_url = (base_url or REGION_BASE_URLS[region]).rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._now = now
        self._random = random.Random()
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(api_key, secret_key),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=True,
            headers={"Accept": "application/zip"},
        )

    @classmethod
    def from_settings(
        cls, settings: AmplitudeSettings, source: str, **options: object
    ) -> AmplitudeClient:
        """A client for one project (`web`/`mobile`) from the `AMPLITUDE_*` settings."""
        api_key, secret_key = settings.credentials(source)
        kwargs: dict[str, object] = {
            "project": source,
            "region": settings.region,
            "base_url": settings.base_url,
            "timeout": settings.timeout_seconds,
            "max_attempts": settings.max_attempts,
        }
        kwargs.update(options)
        return cls(api_key, secret_key, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"AmplitudeClient(project={self.project!r}, region={self.region!r}, "
            f"url={self.base_url!r})"
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> AmplitudeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- export

    def export(self, window: ExportWindow, dest_dir: Path) -> ExportResult:
        """Download `window` into `dest_dir`: one ZIP per (sub-)window, empty windows listed.

        On any error every file this call wrote is removed, so a failed export
        leaves nothing behind.
        """
        self._check_ready(window)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        result = ExportResult()
        started = time.monotonic()
        try:
            for part in _limit_length(window):
                self._export_bisecting(part, dest_dir, result)
        except BaseException:
            for written in result.files:
                written.path.unlink(missing_ok=True)
            raise
        log.info(
            "amplitude export project=%s window=%s: %d file(s), %d bytes, %d empty window(s) "
            "in %.2fs",
            self.project,
            window.label(),
            len(result.files),
            result.total_bytes,
            len(result.empty_windows),
            time.monotonic() - started,
        )
        return result

    def _check_ready(self, window: ExportWindow) -> None:
        now = self._now()
        if window.ends_at() > now - DATA_DELAY:
            ready_at = window.ends_at() + DATA_DELAY
            raise AmplitudeDataNotReady(
                f"Amplitude window {window.label()} of project {self.project!r} ends at "
                f"{window.ends_at():%Y-%m-%d %H:%M} UTC, less than 2 hours before now "
                f"({now:%Y-%m-%d %H:%M} UTC): its data may be incomplete; "
                f"export it after {ready_at:%Y-%m-%d %H:%M} UTC"
            )

    def _export_bisecting(self, window: ExportWindow, dest_dir: Path, result: ExportResult) -> None:
        try:
            exported = self._export_one(window, dest_dir)
        except _SplitWindow as split:
            if window.hours() == 1:
                raise AmplitudeWindowTooLarge(
                    f"Amplitude answered HTTP {split.status} for the single hour "
                    f"{window.start:%Y-%m-%d %H}:00 UTC of project {self.project!r}: that hour is "
                    f"over Amplitude's 4 GB export limit (or keeps timing out) and cannot be "
                    f"split further; ask Amplitude support for the raw files of that hour. "
                    f"Server said: {split.body!r}"
                ) from None
            first, second = window.split()
            log.info(
                "amplitude export project=%s window=%s: HTTP %s, splitting into %s and %s",
                self.project,
                window.label(),
                split.status,
                first.label(),
                second.label(),
            )
            self._export_bisecting(first, dest_dir, result)
            self._export_bisecting(second, dest_dir, result)
            return
        if exported is None:
            result.empty_windows.append(window)
        else:
            result.files.append(exported)

    def _export_one(self, window: ExportWindow, dest_dir: Path) -> ExportedFile | None:
        """One window, retrying transient faults; None when the window has no data."""
        path = dest_dir / f"amplitude_{self.project}_{window.label()}.zip"
        last_reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._request(window, path, attempt)
            except _TransientResponse as fault:
                last_reason = fault.reason
                retry_after = fault.retry_after
            except (httpx.TransportError, httpx.DecodingError) as exc:
                last_reason = f"{type(exc).__name__}: {exc}"
                retry_after = None
                log.warning(
                    "amplitude export project=%s window=%s attempt %d/%d: %s",
                    self.project,
                    window.label(),
                    attempt,
                    self.max_attempts,
                    last_reason,
                )
            if attempt == self.max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            log.info(
                "amplitude export project=%s window=%s: retrying in %.1fs (%s)",
                self.project,
                window.label(),
                delay,
                last_reason,
            )
            self._sleep(delay)
        raise AmplitudeUnavailable(
            f"Amplitude export of window {window.label()} for project {self.project!r} "
            f"({self.base_url}) failed after {self.max_attempts} attempt(s); last fault: "
            f"{last_reason}. The service may be down or rate limiting: retry later, or raise "
            f"max_attempts / the timeout"
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return self._random.uniform(0, cap)

    def _request(self, window: ExportWindow, path: Path, attempt: int) -> ExportedFile | None:
        started = time.monotonic()
        partial = path.with_name(path.name + ".part")
        size = 0
        status: int | str = "-"
        try:
            with self._http.stream("GET", EXPORT_PATH, params=window.params()) as response:
                status = response.status_code
                if status == 200:
                    digest = hashlib.sha256()
                    with open(partial, "wb") as handle:
                        for chunk in response.iter_bytes(_CHUNK):
                            handle.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                else:
                    body = _read_excerpt(response)
                    size = len(body)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            log.info(
                "amplitude GET %s project=%s window=%s attempt=%d/%d status=%s bytes=%d in %.2fs",
                EXPORT_PATH,
                self.project,
                window.label(),
                attempt,
                self.max_attempts,
                status,
                size,
                time.monotonic() - started,
            )
        if status == 200:
            problem = _zip_problem(partial, size)
            if problem == "empty":
                partial.unlink(missing_ok=True)
                return None
            if problem:
                partial.unlink(missing_ok=True)
                raise _TransientResponse(f"HTTP 200 but {problem}")
            partial.replace(path)
            return ExportedFile(path=path, window=window, size=size, sha256=digest.hexdigest())
        return self._handle_error_status(window, status, body, response.headers)

    def _handle_error_status(
        self, window: ExportWindow, status: int, body: str, headers: httpx.Headers
    ) -> None:
        if status == 404:
            log.info(
                "amplitude export project=%s window=%s: no data (HTTP 404)",
                self.project,
                window.label(),
            )
            return None
        if status in (400, 504):
            raise _SplitWindow(status, body)
        if status in (401, 403):
            what = "sent no valid credentials" if status == 401 else "rejected the API key"
            raise AmplitudeAuthError(
                f"Amplitude {what} (HTTP {status}: {body!r}) for project {self.project!r} in "
                f"region {self.region!r} at {self.base_url}: check "
                f"AMPLITUDE_{self.project.upper()}_CLIENT_ID/SECRET_KEY (or the connection's "
                f"login/password) or the region (EU projects need region=eu)"
            )
        if status == 429 or status >= 500:
            retry_after = _retry_after_seconds(headers.get("Retry-After"), self._now())
            raise _TransientResponse(f"HTTP {status}: {body[:120]!r}", retry_after)
        raise AmplitudeError(
            f"Amplitude answered HTTP {status} for window {window.label()} of project "
            f"{self.project!r}: {body!r}; this status is not part of the Export API contract"
        )


def _limit_length(window: ExportWindow) -> Iterator[ExportWindow]:
    """The window in pieces of at most 365 days (the API's limit per request)."""
    start = window.start
    while start <= window.end:
        end = min(window.end, start + (MAX_WINDOW_HOURS - 1) * HOUR)
        yield ExportWindow(start, end)
        start = end + HOUR


def _read_excerpt(response: httpx.Response, limit: int = 500) -> str:
    """The start of an error body (never more than `limit` characters kept)."""
    kept = b""
    for chunk in response.iter_bytes():
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit:
            break
    return kept.decode("utf-8", errors="replace").strip()


def _zip_problem(path: Path, size: int) -> str | None:
    """Why the file is not a complete ZIP ("empty" for a ZIP without entries), else None."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == _EMPTY_ZIP_MAGIC:
        return "empty"
    if magic != _ZIP_MAGIC:
        return f"the body is not a ZIP archive (starts with {magic!r}, {size} bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            for info in entries:
                if info.header_offset + info.compress_size > size:
                    return f"entry {info.filename!r} runs past the end of the body (truncated)"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"the ZIP is truncated or corrupt ({exc}, {size} bytes)"
    if not entries:
        return "empty"
    return None


def _retry_after_seconds(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# --------------------------------------------------------------------------- archive reading


@dataclass(frozen=True, slots=True)
class RawLine:
    """One non-empty line of an archive entry (without its line break); lines count from 1."""

    entry: str
    line: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One event of an archive with the entry and line it came from."""

    entry: str
    line: int
    event: dict


def _entry_sort_key(name: str) -> tuple:
    match = _ENTRY_NAME.search(name)
    if match is None:
        return (1, "", 0, 0, name)
    day, hour, part = match.groups()
    return (0, day, int(hour), int(part), name)


def _open_archive(archive_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(
            f"{archive_path}: not a readable ZIP archive ({exc}); re-export the window"
        ) from exc


def _sorted_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = [info for info in archive.infolist() if not info.is_dir()]
    return sorted(infos, key=lambda info: _entry_sort_key(info.filename))


def archive_entries(archive_path: Path) -> list[str]:
    """Entry names of an export archive in (day, hour, part) order."""
    with _open_archive(archive_path) as archive:
        return [info.filename for info in _sorted_entries(archive)]


def iter_lines(archive_path: Path) -> Iterator[RawLine]:
    """Every non-empty line of every entry, entry by entry in (day, hour, part) order, streamed.

    Gzip entries (`*.gz`) are decompressed on the fly in 1 MB chunks; nothing
    holds a whole entry in memory. Raises `ArchiveError` naming the entry and
    line where the data went bad.
    """
    with _open_archive(archive_path) as archive:
        for info in _sorted_entries(archive):
            yield from _iter_entry_lines(archive_path, archive, info)


def _iter_entry_lines(
    archive_path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> Iterator[RawLine]:
    entry = info.filename
    gzipped = entry.endswith(".gz")
    number = 0  # lines completed so far
    pending = b""
    try:
        with archive.open(info) as raw:
            chunks = _gunzip_chunks(raw) if gzipped else iter(lambda: raw.read(_CHUNK), b"")
            for chunk in chunks:
                lines = chunk.split(b"\n")
                if pending:
                    lines[0] = pending + lines[0]
                pending = lines.pop()
                for data in lines:
                    number += 1
                    data = data.rstrip()
                    if data:
                        yield RawLine(entry, number, data)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, _TruncatedGzip) as exc:
        raise ArchiveError(
            f"{archive_path}: entry {entry!r} is corrupt at line {number + 1} ({exc}); "
            "re-export the window",
            entry=entry,
            line=number + 1,
        ) from exc
    data = pending.rstrip()
    if data:
        yield RawLine(entry, number + 1, data)


class _TruncatedGzip(Exception):
    """The gzip stream ended before its trailer (internal)."""


def _gunzip_chunks(raw: io.BufferedIOBase) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream chunk by chunk."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    seen_member = False
    while True:
        compressed = raw.read(_READ_CHUNK)
        if not compressed:
            break
        while compressed:
            seen_member = True
            # bounded output: highly compressible data must not inflate into one huge block
            out = decompressor.decompress(compressed, _CHUNK)
            if out:
                yield out
            if decompressor.eof:
                compressed = decompressor.unused_data.lstrip(b"\x00")
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                seen_member = False
            else:
                compressed = decompressor.unconsumed_tail
    tail = decompressor.flush()
    if tail:
        yield tail
    if seen_member and not decompressor.eof:
        raise _TruncatedGzip("the gzip stream ends before its end marker (truncated)")


def iter_events(archive_path: Path) -> Iterator[RawEvent]:
    """Every event of an archive as a dict, with its entry and line, in archive order.

    Raises `ArchiveError(entry=..., line=...)` on corrupt data or a line that is
    not a JSON object.
    """
    loads = json.loads
    for raw in iter_lines(archive_path):
        try:
            event = loads(raw.data)
        except ValueError as exc:
            raise ArchiveError(
                f"{archive_path}: entry {raw.entry!r} line {raw.line} is not valid JSON ({exc}): "
                f"{raw.data[:80]!r}",
                entry=raw.entry,
                line=raw.line,
            ) from exc
        if not isinstance(event, dict):
            raise ArchiveError(
                f"{archive_path}: entry {raw.entry!r} line {raw.line} is JSON but not an event "
                f"object (got {type(event).__name__})",
                entry=raw.entry,
                line=raw.line,
            )
        yield RawEvent(raw.entry, raw.line, event)
