"""A real HTTP proxy in front of a sandbox that answers scripted faults first, then forwards.

For faults a sandbox cannot play itself (e.g. a `Retry-After` on AppMetrica's
429 or 503): `FaultProxy(upstream, [Fault(503, {"Retry-After": "7"})])` answers
the first request 503 with that header and forwards every later one to the
sandbox unchanged, so the client under test speaks real HTTP throughout.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

_HOP_BY_HOP = {
    "connection",
    "transfer-encoding",
    "content-encoding",
    "content-length",
    "keep-alive",
}


@dataclass(frozen=True)
class Fault:
    """One scripted answer: status, headers and a text body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class FaultProxy:
    """Answers `faults` in order (one per request), then proxies GETs to `upstream`."""

    def __init__(self, upstream: str, faults: Sequence[Fault]) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults)
        self.answered: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        assert self._server is not None, "start the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                with proxy._lock:
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None:
                    self._answer(fault.status, fault.headers, fault.body.encode())
                    return
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in ("host", "accept-encoding")
                }
                upstream = httpx.get(proxy.upstream + self.path, headers=headers, timeout=30)
                kept = {
                    key: value
                    for key, value in upstream.headers.items()
                    if key.lower() not in _HOP_BY_HOP
                }
                self._answer(upstream.status_code, kept, upstream.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                with proxy._lock:
                    proxy.answered.append(status)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
