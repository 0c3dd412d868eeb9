"""`AppMetricaSandbox`: the Logs API on a local `ThreadingHTTPServer`, and the truth about it.

It answers 202 to the first `ready_after` identical requests and 200 with the file
afterwards, 429 when a 4th distinct request would be queued for one application, 400
"Try to use more parts." when a part is over `max_rows_per_part` rows, 500 for the first
`server_error_first` calls, and gzips the body when the client accepts it.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devtools.sandbox.appmetrica.generator import generate_rows
from devtools.sandbox.appmetrica.protocol import (
    EXPORT_PREFIX,
    MAX_QUEUED_PER_APPLICATION,
    STATUS_PATH,
    Export,
    Reject,
    authorize,
    iter_body,
    parse_export,
    select_fields,
)
from dwh_helper.sources.appmetrica import ExportRequest
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS

log = logging.getLogger(__name__)

DEMO_TOKEN = "demo-appmetrica-token"


@dataclass
class AppMetricaFaults:
    """Behaviour switches: how many 202s before 200, part size limit, 500s first, status."""

    ready_after: int = 2
    max_rows_per_part: int | None = None
    server_error_first: int = 0
    status_enabled: bool = True


@dataclass
class SandboxRequest:
    """One request the sandbox answered."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass
class _Job:
    application_id: str
    polls: int = 0
    ready: bool = False


class AppMetricaSandbox:
    """The Logs API stand-in: start(), url, stop(); also the truth about its generated data."""

    def __init__(
        self,
        token: str = DEMO_TOKEN,
        application_ids: Sequence[str] = ("1111",),
        *,
        seed: int = 7,
        events_per_day: int = 500,
        faults: AppMetricaFaults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.application_ids = tuple(str(item) for item in application_ids)
        self.seed = seed
        self.events_per_day = events_per_day
        self.faults = faults or AppMetricaFaults()
        self.host = host
        self.port = port
        self.requests: list[SandboxRequest] = []
        self.export_calls = 0
        self._jobs: dict[tuple[str, tuple[tuple[str, str], ...]], _Job] = {}
        self._errors_served = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8082` (valid after start())."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> AppMetricaSandbox:
        """Start serving in a daemon thread; `port` is the bound port afterwards."""
        handler = type("AppMetricaHandler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="appmetrica-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.info("AppMetrica sandbox on %s (applications %s)", self.url, self.application_ids)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AppMetricaSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the truth ------------------------------------------------------------------

    def rows(
        self,
        resource: str,
        application_id: str,
        since: datetime,
        until: datetime,
        fields: Sequence[str] | None = None,
        date_dimension: str = "default",
    ) -> list[dict[str, str]]:
        """The rows a window holds, as the API sends them (strings), only the given fields."""
        chosen = tuple(fields or DEFAULT_FIELDS[resource])
        generated = generate_rows(
            resource,
            str(application_id),
            since,
            until,
            seed=self.seed,
            events_per_day=self.events_per_day,
            date_dimension=date_dimension,
        )
        return list(select_fields(generated, chosen))

    def count_rows(
        self,
        resource: str,
        application_id: str,
        since: datetime,
        until: datetime,
        date_dimension: str = "default",
    ) -> int:
        """How many rows a window holds."""
        return sum(
            1
            for _ in generate_rows(
                resource,
                str(application_id),
                since,
                until,
                seed=self.seed,
                events_per_day=self.events_per_day,
                date_dimension=date_dimension,
            )
        )

    def body_bytes(
        self, request: ExportRequest, parts_count: int = 1, part_number: int = 0
    ) -> bytes:
        """Exactly the (uncompressed) body a 200 serves for this request and part."""
        export = Export(
            resource=request.resource,
            fmt=request.fmt,
            application_id=request.application_id,
            since=request.since.replace(tzinfo=None, microsecond=0),
            until=request.until.replace(tzinfo=None, microsecond=0),
            fields=request.fields,
            date_dimension=request.date_dimension,
            use_utf8_bom=request.use_utf8_bom,
            parts_count=parts_count,
            part_number=part_number,
        )
        return b"".join(self._body(export))

    def pending_jobs(self, application_id: str) -> int:
        """How many distinct requests are queued (not ready yet) for an application."""
        with self._lock:
            return sum(
                1
                for job in self._jobs.values()
                if job.application_id == str(application_id) and not job.ready
            )

    # -- request handling -------------------------------------------------------------

    def _part_rows(self, export: Export) -> Iterator[dict[str, str]]:
        rows = generate_rows(
            export.resource,
            export.application_id,
            export.since,
            export.until,
            seed=self.seed,
            events_per_day=self.events_per_day,
            date_dimension=export.date_dimension,
            filters=export.filters,
        )
        for index, row in enumerate(rows):
            if export.limit is not None and index >= export.limit:
                return
            if index % export.parts_count == export.part_number:
                yield row

    def _body(self, export: Export) -> Iterator[bytes]:
        return iter_body(
            self._part_rows(export), export.fields, export.fmt, use_utf8_bom=export.use_utf8_bom
        )

    def _authorize(self, headers: dict[str, str], application_id: str | None) -> None:
        authorize(headers, self.token, self.application_ids, application_id)

    def _handle_export(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, str, Export | None]:
        """(status, text body, export to stream when 200)."""
        self._authorize(headers, params.get("application_id") or None)
        export = parse_export(path, params)
        with self._lock:
            if self._errors_served < self.faults.server_error_first:
                self._errors_served += 1
                raise Reject(500, "Internal server error")
            key = (path, tuple(sorted(params.items())))
            job = self._jobs.get(key)
            if job is not None and job.ready and "no-cache" in headers.get("cache-control", ""):
                del self._jobs[key]
                job = None
            if job is None:
                limit = self.faults.max_rows_per_part
                if limit is not None and sum(1 for _ in self._part_rows(export)) > limit:
                    raise Reject(
                        400,
                        "Result is too big for one file (more than "
                        f"{limit} rows in this part). Try to use more parts.",
                    )
                queued = sum(
                    1
                    for other in self._jobs.values()
                    if other.application_id == export.application_id and not other.ready
                )
                if queued >= MAX_QUEUED_PER_APPLICATION:
                    raise Reject(
                        429,
                        f"There are already {MAX_QUEUED_PER_APPLICATION} enqueued queries for "
                        f"given application_id {export.application_id}. Please, wait for the "
                        "completion of some of them.",
                    )
                job = self._jobs[key] = _Job(export.application_id)
            if not job.ready:
                if job.polls < self.faults.ready_after:
                    job.polls += 1
                    if job.polls == 1:
                        return 202, "Wait for result", None
                    progress = 100 * (job.polls - 1) // self.faults.ready_after
                    return 202, f"Wait for result. Progress is {progress}%", None
                job.ready = True
        return 200, "", export

    def _record(self, request: SandboxRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if request.path.startswith(EXPORT_PREFIX):
                self.export_calls += 1


class _Handler(BaseHTTPRequestHandler):
    """One request to the sandbox (the class gets `sandbox` set by AppMetricaSandbox.start)."""

    sandbox: AppMetricaSandbox
    protocol_version = "HTTP/1.1"
    server_version = "AppMetricaSandbox/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("sandbox %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {key.lower(): value for key, value in self.headers.items()}
        record = SandboxRequest("GET", split.path, params, headers)
        self.sandbox._record(record)  # before answering: a client may look right after
        try:
            if split.path == STATUS_PATH:
                self.sandbox._authorize(headers, None)
                state = "enabled" if self.sandbox.faults.status_enabled else "disabled"
                record.status = 200
                self._send_text(
                    200, json.dumps({"logs_api_availability_status": state}), "application/json"
                )
            elif split.path.startswith(EXPORT_PREFIX):
                status, text, export = self.sandbox._handle_export(split.path, params, headers)
                record.status = status
                if export is None:
                    self._send_text(status, text)
                else:
                    self._send_file(export, "gzip" in headers.get("accept-encoding", ""))
            else:
                raise Reject(404, f"No such endpoint {split.path}")
        except Reject as reject:
            record.status = reject.status
            self._send_text(reject.status, reject.message)
        except (BrokenPipeError, ConnectionResetError):
            record.status = record.status or 499

    def _send_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, export: Export, gzip_body: bool) -> None:
        content_type = "text/csv" if export.fmt == "csv" else "application/json"
        self.send_response(200)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        if gzip_body:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip_body else None
        for chunk in self.sandbox._body(export):
            self._chunk(compressor.compress(chunk) if compressor else chunk)
        if compressor is not None:
            self._chunk(compressor.flush())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
