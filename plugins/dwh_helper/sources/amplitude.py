"""Amplitude Export API client: download raw event archives to disk.

`AmplitudeClient.export(window, dest_dir)` asks `GET /api/2/export` for whole
UTC hours and streams each 200 body to a file (memory stays flat whatever the
export's size). It retries transient faults (429, 5xx, connection errors,
timeouts, a 200 whose body is not a complete ZIP) with the sources' one retry
policy (`http_retry`: exponential backoff with jitter, honouring `Retry-After`
in seconds or as an HTTP-date); treats 404 as an empty window; splits a window
answered with 400/504 ("over 4 GB") in halves down to one hour; and fails
fast, saying what to fix, on bad credentials.

Windows live in `amplitude_window`, errors in `amplitude_errors`, the archive
reader in `amplitude_archive`; their names are re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import httpx

from dwh_helper.sources.amplitude_archive import RawLine, archive_entries, iter_lines, zip_problem
from dwh_helper.sources.amplitude_errors import (
    AmplitudeAuthError,
    AmplitudeDataNotReady,
    AmplitudeError,
    AmplitudeUnavailable,
    AmplitudeWindowTooLarge,
    ArchiveError,
)
from dwh_helper.sources.amplitude_window import (
    DATA_DELAY,
    HOUR,
    MAX_WINDOW_HOURS,
    ExportWindow,
    limit_length,
)
from dwh_helper.sources.http_retry import (
    RetryPolicy,
    fault_fields,
    fault_reason,
    retry_after_seconds,
    transport_fault,
)

if TYPE_CHECKING:
    from dwh_helper.config import AmplitudeSettings

__all__ = [
    "DATA_DELAY",
    "EU_BASE_URL",
    "EXPORT_PATH",
    "HOUR",
    "MAX_WINDOW_HOURS",
    "US_BASE_URL",
    "AmplitudeAuthError",
    "AmplitudeClient",
    "AmplitudeDataNotReady",
    "AmplitudeError",
    "AmplitudeUnavailable",
    "AmplitudeWindowTooLarge",
    "ArchiveError",
    "ExportResult",
    "ExportWindow",
    "ExportedFile",
    "RawLine",
    "archive_entries",
    "iter_lines",
]

log = logging.getLogger(__name__)

US_BASE_URL = "https://amplitude.com"
EU_BASE_URL = "https://analytics.eu.amplitude.com"
REGION_BASE_URLS = {"us": US_BASE_URL, "eu": EU_BASE_URL}
EXPORT_PATH = "/api/2/export"

_CHUNK = 1024 * 1024


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


class _SplitWindow(Exception):
    """400/504: the window must be split (internal)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


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
        self.project = project
        self.region = region
        self.base_url = (base_url or REGION_BASE_URLS[region]).rstrip("/")
        self.retry_policy = RetryPolicy(max_attempts, backoff_base, backoff_max)
        self._sleep = sleep
        self._now = now
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(api_key, secret_key),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=True,
            headers={"Accept": "application/zip"},
        )

    @property
    def max_attempts(self) -> int:
        """Attempts per request before giving up (the retry policy's)."""
        return self.retry_policy.max_attempts

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
            for part in limit_length(window):
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
                    f"Server said: {split.body!r}",
                    status=split.status,
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

    @staticmethod
    def _retryable_error(exc: BaseException) -> bool:
        """The client's one retry decision: network faults, 429, 5xx and broken archives."""
        return transport_fault(exc) or (isinstance(exc, AmplitudeError) and exc.retryable)

    def _export_one(self, window: ExportWindow, dest_dir: Path) -> ExportedFile | None:
        """One window, retrying transient faults; None when the window has no data."""
        path = dest_dir / f"amplitude_{self.project}_{window.label()}.zip"
        label = window.label()

        def on_fault(attempt: int, fault: BaseException) -> None:
            if transport_fault(fault):  # an answered request has its own log line already
                log.warning(
                    "amplitude export project=%s window=%s attempt %d/%d: %s",
                    self.project,
                    label,
                    attempt,
                    self.max_attempts,
                    fault_reason(fault),
                )

        def on_retry(attempt: int, wait: float, fault: BaseException) -> None:
            log.info(
                "amplitude export project=%s window=%s: retrying in %.1fs (%s)",
                self.project,
                label,
                wait,
                fault_reason(fault),
            )

        def give_up(attempts: int, fault: BaseException) -> NoReturn:
            raise AmplitudeUnavailable(
                f"Amplitude export of window {label} for project {self.project!r} "
                f"({self.base_url}) failed after {attempts} attempt(s); last fault: "
                f"{fault_reason(fault)}. The service may be down or rate limiting: retry later, or "
                f"raise max_attempts / the timeout",
                **fault_fields(fault),
            ) from None

        retrying = self.retry_policy.retrying(
            self._retryable_error,
            sleep=self._sleep,
            on_retry=on_retry,
            give_up=give_up,
            on_fault=on_fault,
        )
        for attempt in retrying:
            with attempt:
                return self._request(window, path, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable")  # pragma: no cover - give_up raises

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
            problem = zip_problem(partial, size)
            if problem == "empty":
                partial.unlink(missing_ok=True)
                return None
            if problem:
                partial.unlink(missing_ok=True)
                raise AmplitudeUnavailable(f"HTTP 200 but {problem}", status=200)
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
                f"login/password) or the region (EU projects need region=eu)",
                status=status,
            )
        if status == 429 or status >= 500:
            raise AmplitudeUnavailable(
                f"HTTP {status}: {body[:120]!r}",
                status=status,
                retry_after=retry_after_seconds(headers.get("Retry-After"), self._now()),
            )
        raise AmplitudeError(
            f"Amplitude answered HTTP {status} for window {window.label()} of project "
            f"{self.project!r}: {body!r}; this status is not part of the Export API contract",
            status=status,
        )


def _read_excerpt(response: httpx.Response, limit: int = 500) -> str:
    """The start of an error body (never more than `limit` characters kept)."""
    kept = b""
    for chunk in response.iter_bytes():
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit:
            break
    return kept.decode("utf-8", errors="replace").strip()
