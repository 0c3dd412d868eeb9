"""`AmplitudeSandbox`: `GET /api/2/export` on a local `ThreadingHTTPServer`, with faults.

It answers a ZIP for the window, 404 for a window without data, 401/403 for missing/wrong
keys, and switchable faults (`AmplitudeFaults`) for the client's retry, bisection and
validation paths. Data is a pure function of the seed, so tests compare what they loaded
against `events()` / `archive_bytes()`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from devtools.sandbox.amplitude.generator import hour_event_count, iter_hour, iter_window_hours
from devtools.sandbox.amplitude.protocol import (
    DEFAULT_EVENTS_PER_PART,
    DEFAULT_PROJECTS,
    NON_ZIP_PAGE,
    NOT_FOUND_MESSAGE,
    TOO_LARGE_MESSAGE,
    SandboxProject,
    authenticate,
    write_archive,
)
from dwh_helper.sources.amplitude import EXPORT_PATH, MAX_WINDOW_HOURS, ExportWindow

log = logging.getLogger(__name__)


@dataclass
class AmplitudeFaults:
    """Faults to inject; the `*_first` counters are consumed (decremented) as they fire.

    Order per export call: auth, rate limit, server error, non-ZIP page, stall,
    window checks (too large / empty), then truncate and disconnect (which only
    fire on a call that would otherwise answer 200).
    """

    rate_limit_first: int = 0
    retry_after: int = 1
    server_error_first: int = 0
    truncate_first: int = 0
    non_zip_first: int = 0
    disconnect_first: int = 0
    stall_first: int = 0
    stall_seconds: float = 0.0
    max_window_hours: int | None = None
    too_large_hours: set[datetime] = field(default_factory=set)
    too_large_status: int = 400
    empty_days: set[date] = field(default_factory=set)


@dataclass(frozen=True)
class SandboxRequest:
    """A request the sandbox received and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    project: str | None = None
    fault: str | None = None
    bytes_sent: int = 0


class AmplitudeSandbox:
    """The Export API on 127.0.0.1 (a `ThreadingHTTPServer` in a daemon thread)."""

    def __init__(
        self,
        projects: list[SandboxProject] | None = None,
        *,
        seed: int = 42,
        events_per_hour: int = 40,
        faults: AmplitudeFaults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        events_per_part: int = DEFAULT_EVENTS_PER_PART,
    ) -> None:
        self.projects = list(projects or DEFAULT_PROJECTS)
        names = [project.name for project in self.projects]
        if len(set(names)) != len(names):
            raise ValueError(f"sandbox project names must be unique, got {names}")
        self.seed = seed
        self.events_per_hour = events_per_hour
        self.events_per_part = events_per_part
        self.faults = faults or AmplitudeFaults()
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[SandboxRequest] = []
        self.export_calls = 0
        self._server_errors = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> AmplitudeSandbox:
        """Start serving; `url` is set afterwards."""
        if self._server is not None:
            return self
        handler = type("AmplitudeHandler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"amplitude-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("Amplitude sandbox serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> AmplitudeSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- the truth

    def project(self, name: str) -> SandboxProject:
        """The project called `name` (`web`, `mobile`, ...)."""
        for project in self.projects:
            if project.name == name:
                return project
        known = ", ".join(project.name for project in self.projects)
        raise KeyError(f"the sandbox has no project {name!r}; it serves: {known}")

    def _hour_counts(self, project: SandboxProject, window: ExportWindow) -> Iterator[tuple]:
        for hour in iter_window_hours(window):
            if hour.date() in self.faults.empty_days:
                continue
            count = hour_event_count(project.project_id, hour, self.seed, self.events_per_hour)
            if count:
                yield hour, count

    def events(self, project: str, window: ExportWindow) -> Iterator[dict[str, Any]]:
        """The events a 200 for this window serves, in archive order (streamed)."""
        chosen = self.project(project)
        for hour, count in self._hour_counts(chosen, window):
            yield from iter_hour(chosen.project_id, hour, self.seed, count)

    def count_events(self, project: str, window: ExportWindow) -> int:
        """How many events the window holds (without generating them)."""
        chosen = self.project(project)
        return sum(count for _, count in self._hour_counts(chosen, window))

    def write_archive_to(self, project: str, window: ExportWindow, target: IO[bytes]) -> int:
        """Write the window's archive to a binary file; returns the number of events in it."""
        chosen = self.project(project)
        hours = (
            (hour, iter_hour(chosen.project_id, hour, self.seed, count))
            for hour, count in self._hour_counts(chosen, window)
        )
        return write_archive(target, chosen.project_id, hours, events_per_part=self.events_per_part)

    def archive_bytes(self, project: str, window: ExportWindow) -> bytes | None:
        """Exactly the body a 200 serves for this window, or None when it answers 404."""
        with tempfile.TemporaryFile() as spool:
            if not self.write_archive_to(project, window, spool):
                return None
            spool.seek(0)
            return spool.read()

    # ---------------------------------------------------------------- bookkeeping

    def _record(self, request: SandboxRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, name: str) -> bool:
        """Consume one firing of a `*_first` fault; True when it fires."""
        with self._lock:
            remaining = getattr(self.faults, name)
            if remaining > 0:
                setattr(self.faults, name, remaining - 1)
                return True
            return False

    def _count_export_call(self) -> None:
        with self._lock:
            self.export_calls += 1

    def _authenticate(self, header: str | None) -> tuple[SandboxProject | None, int, str]:
        return authenticate(header, self.projects)


class _Handler(BaseHTTPRequestHandler):
    """Serves `GET /api/2/export` for the sandbox it is bound to."""

    sandbox: AmplitudeSandbox
    protocol_version = "HTTP/1.1"
    server_version = "AmplitudeSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("sandbox %s - " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        if parts.path.rstrip("/") != EXPORT_PATH:
            self._answer(
                parts.path,
                query,
                404,
                b'{"error":"Not Found"}',
                None,
                None,
                content_type="application/json",
            )
            return
        self.sandbox._count_export_call()
        try:
            self._export(parts.path, query)
        except OSError:  # the client hung up (timeouts, tests) or the server is stopping
            log.debug("sandbox: client went away during %s", self.path)

    def _export(self, path: str, query: dict[str, str]) -> None:
        sandbox = self.sandbox
        faults = sandbox.faults
        project, status, message = sandbox._authenticate(self.headers.get("Authorization"))
        if project is None:
            self._answer(path, query, status, message.encode(), None, None)
            return
        name = project.name
        if sandbox._take_fault("rate_limit_first"):
            self._answer(
                path,
                query,
                429,
                b"Too many requests",
                name,
                "rate_limit",
                headers={"Retry-After": str(faults.retry_after)},
            )
            return
        if sandbox._take_fault("server_error_first"):
            with sandbox._lock:
                sandbox._server_errors += 1
                status = 500 if sandbox._server_errors % 2 else 503
            self._answer(path, query, status, b"Internal Server Error", name, "server_error")
            return
        if sandbox._take_fault("non_zip_first"):
            self._answer(
                path,
                query,
                200,
                NON_ZIP_PAGE,
                name,
                "non_zip",
                content_type="text/html; charset=utf-8",
            )
            return
        if sandbox._take_fault("stall_first"):
            time.sleep(faults.stall_seconds)
        try:
            window = ExportWindow.from_params(query.get("start", ""), query.get("end", ""))
        except ValueError as exc:
            self._answer(path, query, 400, f"Invalid request: {exc}".encode(), name, None)
            return
        if window.hours() > MAX_WINDOW_HOURS:
            self._answer(path, query, 400, b"Invalid request: at most 365 days", name, None)
            return
        if (
            faults.max_window_hours is not None and window.hours() > faults.max_window_hours
        ) or any(hour in faults.too_large_hours for hour in iter_window_hours(window)):
            self._answer(
                path, query, faults.too_large_status, TOO_LARGE_MESSAGE.encode(), name, "too_large"
            )
            return
        with tempfile.TemporaryFile() as spool:
            if not sandbox.write_archive_to(name, window, spool):
                self._answer(path, query, 404, NOT_FOUND_MESSAGE.encode(), name, None)
                return
            size = spool.tell()
            spool.seek(0)
            if sandbox._take_fault("truncate_first"):
                self._send_file(path, query, spool, size // 2, size // 2, name, "truncate")
            elif sandbox._take_fault("disconnect_first"):
                self._send_file(path, query, spool, size, size // 2, name, "disconnect")
            else:
                self._send_file(path, query, spool, size, size, name, None)

    def _send_file(
        self,
        path: str,
        query: dict[str, str],
        spool: IO[bytes],
        advertised: int,
        sent: int,
        project: str,
        fault: str | None,
    ) -> None:
        self.sandbox._record(SandboxRequest("GET", path, query, 200, project, fault, sent))
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(advertised))
        self.send_header("Content-Disposition", 'attachment; filename="export.zip"')
        if sent < advertised:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        shutil.copyfileobj(_Limited(spool, sent), self.wfile, 64 * 1024)
        self.wfile.flush()

    def _answer(
        self,
        path: str,
        query: dict[str, str],
        status: int,
        body: bytes,
        project: str | None,
        fault: str | None,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sandbox._record(SandboxRequest("GET", path, query, status, project, fault, len(body)))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Limited:
    """Read at most `limit` bytes of a file (for truncated bodies)."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self._handle = handle
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data
