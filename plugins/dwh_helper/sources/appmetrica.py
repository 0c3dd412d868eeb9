"""AppMetrica Logs API client: the preparation protocol (202 → 200), parts, retries; no Airflow.

`AppMetricaClient.export(...)` repeats the identical request while AppMetrica
answers 202 ("Wait for result", "Progress is N%"), every `poll_interval`
seconds up to `poll_timeout`, then streams the 200 body to a file. A 429
("already 3 enqueued queries") waits `rate_limit_wait` and retries; a 400
saying "Try to use more parts" doubles `parts_count` and fetches every part;
5xx answers and network errors are retried with exponential backoff and
jitter. Bad credentials and bad parameters raise fatal errors whose message
says what to fix. Every wait goes through the injectable `sleep`/`monotonic`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from dwh_helper.config import AppMetricaSettings
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS, FORMATS

__all__ = [
    "DEFAULT_FIELDS",
    "AppMetricaAuthError",
    "AppMetricaBadRequest",
    "AppMetricaClient",
    "AppMetricaError",
    "AppMetricaNotReady",
    "AppMetricaTooLarge",
    "AppMetricaUnavailable",
    "ExportRequest",
    "ExportedPart",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.appmetrica.yandex.ru"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_DIMENSIONS: tuple[str, ...] = ("default", "receive")
MORE_PARTS_MARKER = "try to use more parts"
MAX_PARTS_COUNT = 1024
_PROGRESS = re.compile(r"progress is (\d+)\s*%", re.IGNORECASE)
_CHUNK = 1024 * 1024


class AppMetricaError(Exception):
    """Any failure talking to the Logs API; `retryable` says whether trying later may succeed."""

    retryable: bool = False


class AppMetricaAuthError(AppMetricaError):
    """401/403: the token is missing, wrong, or has no access to the application (fatal)."""


class AppMetricaBadRequest(AppMetricaError):
    """Any other 400: AppMetrica rejected the parameters; the message quotes its answer (fatal)."""


class AppMetricaTooLarge(AppMetricaBadRequest):
    """400 "Try to use more parts": this part is too large; ask again with more parts."""


class AppMetricaNotReady(AppMetricaError):
    """The file was still being prepared (202) when the polling deadline passed."""

    retryable = True


class AppMetricaUnavailable(AppMetricaError):
    """5xx answers, network errors or 429s persisted through every retry."""

    retryable = True


@dataclass(frozen=True)
class ExportRequest:
    """One Logs API export: a resource of one application over [since, until] (inclusive)."""

    resource: str
    application_id: str
    since: datetime
    until: datetime
    fields: tuple[str, ...]
    date_dimension: str = "default"
    use_utf8_bom: bool = False
    skip_unavailable_shards: bool = False
    fmt: str = "csv"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_0-9]+", self.resource or ""):
            raise ValueError(f"resource {self.resource!r} is not a Logs API resource name")
        if not str(self.application_id).isdigit():
            raise ValueError(f"application_id {self.application_id!r} must be a numeric id")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt {self.fmt!r}: use 'csv' or 'json'")
        if self.date_dimension not in DATE_DIMENSIONS:
            raise ValueError(f"date_dimension {self.date_dimension!r}: use 'default' or 'receive'")
        if not self.fields:
            raise ValueError("fields is empty: name at least one Logs API field")
        if self.until < self.since:
            raise ValueError(f"until ({self.until}) is before since ({self.since})")
        object.__setattr__(self, "application_id", str(self.application_id))
        object.__setattr__(self, "fields", tuple(self.fields))

    @property
    def path(self) -> str:
        """The URL path, e.g. `/logs/v1/export/events.csv`."""
        return f"/logs/v1/export/{self.resource}.{self.fmt}"

    def params(self, parts_count: int = 1, part_number: int = 0) -> dict[str, str]:
        """The query parameters; `parts_count`/`part_number` only when split into parts."""
        params = {
            "application_id": self.application_id,
            "date_since": self.since.strftime(DATE_FORMAT),
            "date_until": self.until.strftime(DATE_FORMAT),
            "fields": ",".join(self.fields),
            "date_dimension": self.date_dimension,
            "use_utf8_bom": "true" if self.use_utf8_bom else "false",
        }
        if self.skip_unavailable_shards:
            params["skip_unavailable_shards"] = "true"
        if parts_count > 1:
            params["parts_count"] = str(parts_count)
            params["part_number"] = str(part_number)
        return params

    def describe(self, parts_count: int = 1, part_number: int = 0) -> str:
        """A short label for logs and errors (never the token)."""
        label = (
            f"{self.resource}.{self.fmt} app={self.application_id} "
            f"[{self.since:%Y-%m-%d %H:%M:%S} .. {self.until:%Y-%m-%d %H:%M:%S}]"
        )
        if parts_count > 1:
            label += f" part {part_number + 1}/{parts_count}"
        return label

    def file_name(self, parts_count: int = 1, part_number: int = 0) -> str:
        """A deterministic file name for one part."""
        return (
            f"{self.resource}_{self.application_id}_{self.since:%Y%m%dT%H%M%S}_"
            f"{self.until:%Y%m%dT%H%M%S}_part{part_number + 1:04d}of{parts_count:04d}.{self.fmt}"
        )


@dataclass(frozen=True)
class ExportedPart:
    """One downloaded file: where it is, which part of how many, its size in bytes."""

    path: Path
    part_number: int
    parts_count: int
    size: int


class _Pending(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _RateLimited(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Transient(Exception):
    pass


def _quote(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class AppMetricaClient:
    """A Logs API client over one `httpx.Client`; waits go through the injected sleep/monotonic."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval: float = 10.0,
        poll_timeout: float = 1800.0,
        timeout: float = 600.0,
        max_attempts: int = 6,
        rate_limit_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if not token:
            raise AppMetricaAuthError(
                "no AppMetrica OAuth token: set the password of connection appmetrica_default "
                "or APPMETRICA_TOKEN"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.max_attempts = max_attempts
        self.rate_limit_wait = rate_limit_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._monotonic = monotonic
        self._random = random.Random()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"OAuth {token}",
                "Accept-Encoding": "gzip",
                "User-Agent": "dwh-helper-appmetrica/1",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            transport=transport,
            follow_redirects=True,
        )
        self._locks: dict[tuple[str, tuple[tuple[str, str], ...]], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings: AppMetricaSettings, **options: Any) -> AppMetricaClient:
        """A client from the `APPMETRICA_*` settings (token, base URL, polling, timeout)."""
        return cls(
            settings.require_token(),
            base_url=settings.base_url,
            poll_interval=settings.poll_interval_seconds,
            poll_timeout=settings.poll_timeout_seconds,
            timeout=settings.timeout_seconds,
            **options,
        )

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> AppMetricaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ----------------------------------------------------------

    def status(self) -> bool:
        """Whether the Logs API is enabled (`/management/v1/logsapi/status`)."""
        path = "/management/v1/logsapi/status"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._http.get(path)
            except httpx.TransportError as exc:
                self._backoff(attempt, f"status: {type(exc).__name__}: {exc}")
                continue
            if response.status_code in (401, 403):
                raise AppMetricaAuthError(
                    f"AppMetrica answered {response.status_code} to {path}: "
                    f"{_quote(response.text)!r}; check the OAuth token"
                )
            if response.status_code == 429 or response.status_code >= 500:
                self._backoff(attempt, f"status: HTTP {response.status_code}")
                continue
            if response.status_code != 200:
                raise AppMetricaBadRequest(
                    f"AppMetrica answered {response.status_code} to {path}: "
                    f"{_quote(response.text)!r}"
                )
            try:
                value = response.json()["logs_api_availability_status"]
            except (ValueError, KeyError, TypeError):
                raise AppMetricaBadRequest(
                    f"unexpected answer from {path}: {_quote(response.text)!r}"
                ) from None
            return value == "enabled"
        raise AppMetricaUnavailable(f"{path}: no answer after {self.max_attempts} attempts")

    def export(
        self,
        resource: str,
        application_id: str,
        since: datetime,
        until: datetime,
        fields: tuple[str, ...] | list[str] | None = None,
        date_dimension: str = "default",
        use_utf8_bom: bool = False,
        skip_unavailable_shards: bool = False,
        fmt: str = "csv",
        dest_dir: Path | str = ".",
    ) -> list[ExportedPart]:
        """Download a window as one file per part into `dest_dir` (parts doubled while too large).

        `fields` defaults to every field of the resource (`DEFAULT_FIELDS`).
        """
        if fields is None:
            if resource not in DEFAULT_FIELDS:
                raise ValueError(
                    f"no default fields for resource {resource!r}: pass fields explicitly"
                )
            fields = DEFAULT_FIELDS[resource]
        request = ExportRequest(
            resource=resource,
            application_id=str(application_id),
            since=since,
            until=until,
            fields=tuple(fields),
            date_dimension=date_dimension,
            use_utf8_bom=use_utf8_bom,
            skip_unavailable_shards=skip_unavailable_shards,
            fmt=fmt,
        )
        return self.export_request(request, Path(dest_dir))

    def export_request(self, request: ExportRequest, dest_dir: Path) -> list[ExportedPart]:
        """`export` for a prepared `ExportRequest`."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        started = self._monotonic()
        parts_count = 1
        while True:
            parts: list[ExportedPart] = []
            try:
                for part_number in range(parts_count):
                    parts.append(self._fetch_part(request, dest_dir, parts_count, part_number))
            except AppMetricaTooLarge:
                for part in parts:
                    part.path.unlink(missing_ok=True)
                if parts_count * 2 > MAX_PARTS_COUNT:
                    raise
                parts_count *= 2
                log.info(
                    "%s: AppMetrica asks for more parts; retrying with parts_count=%d",
                    request.describe(),
                    parts_count,
                )
                continue
            total = sum(part.size for part in parts)
            log.info(
                "%s: downloaded %d part(s), %d bytes in %.1fs",
                request.describe(),
                len(parts),
                total,
                self._monotonic() - started,
            )
            return parts

    def request_once(
        self,
        request: ExportRequest,
        dest_dir: Path,
        parts_count: int = 1,
        part_number: int = 0,
    ) -> ExportedPart | None:
        """One poll: the downloaded part on 200, None while AppMetrica answers 202.

        5xx and network errors are retried with backoff (up to `max_attempts`);
        a 429 raises `AppMetricaUnavailable` at once (the caller decides when
        to ask again); "Try to use more parts" raises `AppMetricaTooLarge`.
        """
        self._check_part(parts_count, part_number)
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        with self._exclusive(request, parts_count, part_number):
            for attempt in range(1, self.max_attempts + 1):
                try:
                    return self._send(request, Path(dest_dir), parts_count, part_number)
                except _Pending as pending:
                    log.info("%s: %s", request.describe(parts_count, part_number), pending.message)
                    return None
                except _RateLimited as limited:
                    raise AppMetricaUnavailable(
                        f"{request.describe(parts_count, part_number)}: AppMetrica answered 429 "
                        f"{limited.message!r}; at most 3 requests may be queued per application, "
                        "try again later"
                    ) from None
                except _Transient as exc:
                    self._backoff(attempt, f"{request.describe(parts_count, part_number)}: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the protocol ----------------------------------------------------------

    @staticmethod
    def _check_part(parts_count: int, part_number: int) -> None:
        if parts_count < 1 or not 0 <= part_number < parts_count:
            raise ValueError(
                f"part_number {part_number} / parts_count {parts_count}: need "
                "parts_count >= 1 and 0 <= part_number < parts_count"
            )

    def _fetch_part(
        self, request: ExportRequest, dest_dir: Path, parts_count: int, part_number: int
    ) -> ExportedPart:
        """Poll one part until 200, honouring the deadline, 429 waits and transient retries."""
        label = request.describe(parts_count, part_number)
        started = self._monotonic()
        deadline = started + self.poll_timeout
        polls = 0
        failures = 0
        with self._exclusive(request, parts_count, part_number):
            while True:
                try:
                    part = self._send(request, dest_dir, parts_count, part_number)
                except _Pending as pending:
                    polls += 1
                    failures = 0
                    waited = self._monotonic() - started
                    progress = _PROGRESS.search(pending.message)
                    log.info(
                        "%s: preparing (%s), poll %d, %.0fs waited",
                        label,
                        f"{progress.group(1)}%" if progress else pending.message,
                        polls,
                        waited,
                    )
                    if self._monotonic() + self.poll_interval > deadline:
                        raise AppMetricaNotReady(
                            f"{label}: still being prepared after {waited:.0f}s and {polls} "
                            f"polls (last answer {pending.message!r}); poll_timeout is "
                            f"{self.poll_timeout:.0f}s — retry later or raise poll_timeout"
                        ) from None
                    self._sleep(self.poll_interval)
                    continue
                except _RateLimited as limited:
                    failures = 0
                    wait = max(self.rate_limit_wait, limited.retry_after or 0.0)
                    if self._monotonic() + wait > deadline:
                        raise AppMetricaUnavailable(
                            f"{label}: AppMetrica kept answering 429 {limited.message!r} until "
                            f"the {self.poll_timeout:.0f}s deadline; at most 3 requests may be "
                            "queued per application — lower the concurrency for it"
                        ) from None
                    log.warning(
                        "%s: rate limited (%s); waiting %.0fs", label, limited.message, wait
                    )
                    self._sleep(wait)
                    continue
                except _Transient as exc:
                    failures += 1
                    self._backoff(failures, f"{label}: {exc}")
                    continue
                log.info(
                    "%s: ready after %d poll(s) and %.1fs, %d bytes -> %s",
                    label,
                    polls,
                    self._monotonic() - started,
                    part.size,
                    part.path.name,
                )
                return part

    def _backoff(self, attempt: int, reason: str) -> None:
        """Sleep before the next attempt, or raise AppMetricaUnavailable when attempts ran out."""
        if attempt >= self.max_attempts:
            raise AppMetricaUnavailable(
                f"{reason}; gave up after {self.max_attempts} attempts — AppMetrica or the "
                "network is failing, retry later"
            )
        wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        wait *= 0.5 + self._random.random() / 2
        log.warning(
            "%s; attempt %d/%d, retrying in %.1fs", reason, attempt, self.max_attempts, wait
        )
        self._sleep(wait)

    def _send(
        self, request: ExportRequest, dest_dir: Path, parts_count: int, part_number: int
    ) -> ExportedPart:
        """One HTTP exchange; raises _Pending/_RateLimited/_Transient or a public error."""
        params = request.params(parts_count, part_number)
        label = request.describe(parts_count, part_number)
        target = dest_dir / request.file_name(parts_count, part_number)
        try:
            with self._http.stream("GET", request.path, params=params) as response:
                status = response.status_code
                if status == 200:
                    size = self._save(response, target)
                    return ExportedPart(target, part_number, parts_count, size)
                text = response.read().decode("utf-8", "replace")
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        message = _quote(text)
        if status == 202:
            raise _Pending(message or "Wait for result")
        if status == 429:
            raise _RateLimited(message, _retry_after(response))
        if status in (401, 403):
            what = "is missing or invalid" if status == 401 else "has no access to it"
            raise AppMetricaAuthError(
                f"AppMetrica refused application {request.application_id} ({status}: "
                f"{message!r}): the OAuth token {what}; fix the password of connection "
                "appmetrica_default (or APPMETRICA_TOKEN) or the application id"
            )
        if status == 400 and MORE_PARTS_MARKER in text.lower():
            raise AppMetricaTooLarge(f"{label}: AppMetrica says {message!r}")
        if status >= 500 or status == 408:
            raise _Transient(f"HTTP {status} {message!r}")
        raise AppMetricaBadRequest(
            f"{label}: AppMetrica answered {status}: {message!r}; fix the request "
            f"(fields, dates, resource) — parameters sent: {_safe_params(params)}"
        )

    def _save(self, response: httpx.Response, target: Path) -> int:
        """Stream the (decompressed) body into `target` atomically; returns its size."""
        partial = target.with_name(target.name + ".partial")
        size = 0
        try:
            with open(partial, "wb") as handle:
                for chunk in response.iter_bytes(_CHUNK):
                    handle.write(chunk)
                    size += len(chunk)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size

    @contextmanager
    def _exclusive(
        self, request: ExportRequest, parts_count: int, part_number: int
    ) -> Iterator[None]:
        """Serialize identical requests made through this client (never fire duplicates)."""
        key = (request.path, tuple(sorted(request.params(parts_count, part_number).items())))
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


def _safe_params(params: dict[str, Any]) -> str:
    shown = dict(params)
    fields = shown.get("fields", "")
    if len(fields) > 120:
        shown["fields"] = fields[:120] + "..."
    return ", ".join(f"{key}={value}" for key, value in shown.items())
