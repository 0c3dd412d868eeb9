"""AppMetrica Logs API client: the preparation protocol (202 → 200), parts, retries; no Airflow.

`export(...)` repeats the identical request while AppMetrica answers 202
("Progress is N%") every `poll_interval` seconds, giving up when a part made
no progress for `poll_timeout`, then streams the 200 body to a file. A 429
("already 3 enqueued queries") waits `rate_limit_wait` (or a longer
`Retry-After`); a 400 "Try to use more parts" doubles `parts_count`. 5xx and
network errors are retried under the sources' one policy (`http_retry`).
`download` runs the protocol for several requests at once (the API's export
of many days), never queueing more than `max_queued` files at AppMetrica.
Every wait goes through the injectable `sleep`/`monotonic`. Requests and parts
live in `appmetrica_request`, errors in `appmetrica_errors` (re-exported here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx

from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS
from dwh_helper.config import AppMetricaSettings
from dwh_helper.sources.appmetrica_errors import (
    AppMetricaAuthError,
    AppMetricaBadRequest,
    AppMetricaError,
    AppMetricaNotReady,
    AppMetricaQueueFull,
    AppMetricaTooLarge,
    AppMetricaUnavailable,
)
from dwh_helper.sources.appmetrica_request import (
    DATE_FORMAT,
    MORE_PARTS_MARKER,
    ExportedPart,
    ExportRequest,
    PartsDownload,
    Preparing,
)
from dwh_helper.sources.http_retry import (
    RetryPolicy,
    fault_fields,
    fault_reason,
    retry_after_seconds,
    transport_fault,
)

__all__ = [
    "DATE_FORMAT",
    "DEFAULT_FIELDS",
    "AppMetricaAuthError",
    "AppMetricaBadRequest",
    "AppMetricaClient",
    "AppMetricaError",
    "AppMetricaNotReady",
    "AppMetricaQueueFull",
    "AppMetricaTooLarge",
    "AppMetricaUnavailable",
    "ExportRequest",
    "ExportedPart",
    "PartsDownload",
    "Preparing",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.appmetrica.yandex.ru"
STATUS_PATH = "/management/v1/logsapi/status"
_CHUNK = 1024 * 1024
_T = TypeVar("_T")


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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.BaseTransport | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if not token:
            raise AppMetricaAuthError(
                "no AppMetrica OAuth token: set the password of connection appmetrica_default "
                "or APPMETRICA_TOKEN"
            )
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.retry_policy = RetryPolicy(max_attempts, backoff_base, backoff_max)
        self.rate_limit_wait = rate_limit_wait
        self._sleep = sleep
        self._monotonic = monotonic
        self._now = now
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

    @property
    def max_attempts(self) -> int:
        """Attempts per request before giving up (the retry policy's)."""
        return self.retry_policy.max_attempts

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
        return self._with_retries("status", self._ask_status)

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
        """`export` for a prepared `ExportRequest`: its parts one after the other."""
        started = self._monotonic()
        download = PartsDownload(request)
        self.download([download], dest_dir)
        parts = download.files()
        log.info(
            "%s: downloaded %d part(s), %d bytes in %.1fs",
            request.describe(),
            len(parts),
            sum(part.size for part in parts),
            self._monotonic() - started,
        )
        return parts

    def download(
        self,
        downloads: Sequence[PartsDownload],
        dest_dir: Path,
        *,
        max_queued: int = 1,
        wait_seconds: float | None = None,
    ) -> bool:
        """Poll missing parts round by round: True when all are saved, False past `wait_seconds`.

        A round asks once for each missing part, in order, and stops when
        `max_queued` of them are being prepared (AppMetrica queues at most 3
        per application); between rounds it waits `poll_interval`, or after a
        429 `rate_limit_wait`. Raises `AppMetricaNotReady` (or, while 429s
        persist, `AppMetricaUnavailable`) when a request made no progress for
        `poll_timeout`.
        """
        dest_dir.mkdir(parents=True, exist_ok=True)
        started = self._monotonic()
        for item in downloads:
            item.progressed(started)
        while True:
            queue_full = self._poll_round(downloads, dest_dir, max_queued)
            pending = [item for item in downloads if not item.done]
            if not pending:
                return True
            if queue_full is not None:
                wait = max(self.rate_limit_wait, queue_full.retry_after or 0.0)
            else:
                wait = self.poll_interval
            now = self._monotonic()
            stalled = min(pending, key=lambda item: item.since)
            if now + wait > stalled.since + self.poll_timeout:
                raise self._deadline_error(stalled, queue_full, now)
            if wait_seconds is not None and now + wait > started + wait_seconds:
                return False
            if queue_full is not None:
                log.warning(
                    "%s: rate limited (%s); waiting %.0fs",
                    queue_full.label,
                    queue_full.answer,
                    wait,
                )
            self._sleep(wait)

    def poll_part(
        self,
        request: ExportRequest,
        dest_dir: Path,
        parts_count: int = 1,
        part_number: int = 0,
    ) -> ExportedPart | Preparing:
        """Ask once for one part: the downloaded file on 200, `Preparing` on 202.

        5xx and network errors are retried (the retry policy, up to
        `max_attempts`); a 429 raises `AppMetricaQueueFull` at once (the caller
        decides when to ask again); "Try to use more parts" raises
        `AppMetricaTooLarge`.
        """
        if parts_count < 1 or not 0 <= part_number < parts_count:
            raise ValueError(
                f"part_number {part_number} / parts_count {parts_count}: need "
                "parts_count >= 1 and 0 <= part_number < parts_count"
            )
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        label = request.describe(parts_count, part_number)
        with self._exclusive(request, parts_count, part_number):
            return self._with_retries(
                label, lambda: self._send(request, Path(dest_dir), parts_count, part_number)
            )

    # -- the protocol ----------------------------------------------------------

    def _poll_round(
        self, downloads: Sequence[PartsDownload], dest_dir: Path, max_queued: int
    ) -> AppMetricaQueueFull | None:
        """Ask once for missing parts until `max_queued` are preparing; the 429 that ended it."""
        queued = 0
        for item in downloads:
            numbers = item.pending()
            while numbers:
                number = numbers.pop(0)
                if queued >= max_queued:
                    return None
                try:
                    answer = self.poll_part(item.request, dest_dir, item.parts_count, number)
                except AppMetricaTooLarge as too_large:
                    item.double(too_large, self._monotonic())
                    log.info(
                        "%s: AppMetrica asks for more parts; retrying with parts_count=%d",
                        item.request.describe(),
                        item.parts_count,
                    )
                    numbers = item.pending()
                    continue
                except AppMetricaQueueFull as queue_full:
                    return queue_full
                label = item.request.describe(item.parts_count, number)
                if isinstance(answer, Preparing):
                    item.preparing(answer)
                    queued += 1
                    log.info(
                        "%s: preparing (%s), poll %d, %.0fs waited",
                        label,
                        answer.progress,
                        item.polls,
                        self._monotonic() - item.since,
                    )
                    continue
                log.info(
                    "%s: ready after %d poll(s) and %.1fs, %d bytes -> %s",
                    label,
                    item.polls,
                    self._monotonic() - item.since,
                    answer.size,
                    answer.path.name,
                )
                item.saved(answer, self._monotonic())
        return None

    def _deadline_error(
        self, stalled: PartsDownload, queue_full: AppMetricaQueueFull | None, now: float
    ) -> AppMetricaError:
        """The error of a download that made no progress for `poll_timeout`."""
        if queue_full is not None:
            return AppMetricaUnavailable(
                f"{queue_full.label}: AppMetrica kept answering 429 {queue_full.answer!r} until "
                f"the {self.poll_timeout:.0f}s deadline; at most 3 requests may be queued per "
                "application — lower the concurrency for it",
                status=429,
                retry_after=queue_full.retry_after,
            )
        number = stalled.pending()[0]
        return AppMetricaNotReady(
            f"{stalled.request.describe(stalled.parts_count, number)}: still being prepared "
            f"after {now - stalled.since:.0f}s and {stalled.polls} polls (last answer "
            f"{stalled.last_answer!r}); poll_timeout is {self.poll_timeout:.0f}s — retry later "
            "or raise poll_timeout",
            status=202,
        )

    @staticmethod
    def _retryable_error(exc: BaseException) -> bool:
        """The client's one retry decision: network faults, 408, 429 of the status call, 5xx."""
        if transport_fault(exc):
            return True
        return isinstance(exc, AppMetricaUnavailable) and not isinstance(exc, AppMetricaQueueFull)

    def _with_retries(self, label: str, call: Callable[[], _T]) -> _T:
        """`call()` under the retry policy; `AppMetricaUnavailable` when attempts ran out."""

        def on_retry(attempt: int, wait: float, fault: BaseException) -> None:
            log.warning(
                "%s: %s; attempt %d/%d, retrying in %.1fs",
                label,
                fault_reason(fault),
                attempt,
                self.max_attempts,
                wait,
            )

        def give_up(attempts: int, fault: BaseException) -> NoReturn:
            raise AppMetricaUnavailable(
                f"{label}: {fault_reason(fault)}; gave up after {attempts} attempts — "
                "AppMetrica or the network is failing, retry later",
                **fault_fields(fault),
            ) from None

        retrying = self.retry_policy.retrying(
            self._retryable_error, sleep=self._sleep, on_retry=on_retry, give_up=give_up
        )
        for attempt in retrying:
            with attempt:
                return call()
        raise AssertionError("unreachable")  # pragma: no cover - give_up raises

    def _ask_status(self) -> bool:
        """One `/management/v1/logsapi/status` exchange."""
        response = self._http.get(STATUS_PATH)
        status = response.status_code
        answer = _quote(response.text)
        if status in (401, 403):
            raise AppMetricaAuthError(
                f"AppMetrica answered {status} to {STATUS_PATH}: {answer!r}; check the OAuth token",
                status=status,
            )
        if status == 429 or status >= 500:
            raise AppMetricaUnavailable(
                f"HTTP {status} {answer!r}", status=status, retry_after=self._retry_after(response)
            )
        if status != 200:
            raise AppMetricaBadRequest(
                f"AppMetrica answered {status} to {STATUS_PATH}: {answer!r}", status=status
            )
        try:
            value = response.json()["logs_api_availability_status"]
        except (ValueError, KeyError, TypeError):
            raise AppMetricaBadRequest(
                f"unexpected answer from {STATUS_PATH}: {answer!r}", status=status
            ) from None
        return value == "enabled"

    def _send(
        self, request: ExportRequest, dest_dir: Path, parts_count: int, part_number: int
    ) -> ExportedPart | Preparing:
        """One export exchange: the part, `Preparing`, or an error with its status."""
        params = request.params(parts_count, part_number)
        label = request.describe(parts_count, part_number)
        target = dest_dir / request.file_name(parts_count, part_number)
        with self._http.stream("GET", request.path, params=params) as response:
            status = response.status_code
            if status == 200:
                size = self._save(response, target)
                return ExportedPart(target, part_number, parts_count, size)
            text = response.read().decode("utf-8", "replace")
        message = _quote(text)
        if status == 202:
            return Preparing(message or "Wait for result")
        if status == 429:
            raise AppMetricaQueueFull(
                f"{label}: AppMetrica answered 429 {message!r}; at most 3 requests may be "
                "queued per application, try again later",
                label=label,
                answer=message,
                retry_after=self._retry_after(response),
            )
        if status in (401, 403):
            what = "is missing or invalid" if status == 401 else "has no access to it"
            raise AppMetricaAuthError(
                f"AppMetrica refused application {request.application_id} ({status}: "
                f"{message!r}): the OAuth token {what}; fix the password of connection "
                "appmetrica_default (or APPMETRICA_TOKEN) or the application id",
                status=status,
            )
        if status == 400 and MORE_PARTS_MARKER in text.lower():
            raise AppMetricaTooLarge(f"{label}: AppMetrica says {message!r}", status=status)
        if status >= 500 or status == 408:
            raise AppMetricaUnavailable(
                f"HTTP {status} {message!r}", status=status, retry_after=self._retry_after(response)
            )
        raise AppMetricaBadRequest(
            f"{label}: AppMetrica answered {status}: {message!r}; fix the request "
            f"(fields, dates, resource) — parameters sent: {_safe_params(params)}",
            status=status,
        )

    def _retry_after(self, response: httpx.Response) -> float | None:
        """The answer's `Retry-After` in seconds (delay-seconds or HTTP-date), else None."""
        return retry_after_seconds(response.headers.get("Retry-After"), self._now())

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


def _quote(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _safe_params(params: dict[str, Any]) -> str:
    shown = dict(params)
    fields = shown.get("fields", "")
    if len(fields) > 120:
        shown["fields"] = fields[:120] + "..."
    return ", ".join(f"{key}={value}" for key, value in shown.items())
