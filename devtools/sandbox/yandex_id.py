"""A local stand-in for Yandex ID's token check (`GET /info?format=json`), for tests and the demo.

It answers like `login.yandex.ru/info`: 200 with the token owner's JSON for a
known token sent as `Authorization: OAuth <token>` (or `Bearer <token>`), 401
otherwise. `mode` switches it to answer 5xx (`"error"`) or to hang (`"hang"`)
so callers can test what they do when Yandex ID is down.

Run it alone: `python -m devtools.sandbox.yandex_id --port 8091` (serves `DEMO_TOKENS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

Mode = Literal["ok", "error", "hang"]

DEMO_CLIENT_ID = "demo-client-id"
"""The `client_id` every demo token reports (set `AUTH_CLIENT_ID` to it to test the pin)."""

DEMO_TOKENS: dict[str, dict[str, Any]] = {
    "demo-read-token": {
        "login": "demo-reader",
        "id": "1000001",
        "client_id": DEMO_CLIENT_ID,
        "psuid": "1.demo.reader",
    },
    "demo-write-token": {
        "login": "demo-writer",
        "id": "1000002",
        "client_id": DEMO_CLIENT_ID,
        "psuid": "1.demo.writer",
    },
    "demo-stranger-token": {
        "login": "demo-stranger",
        "id": "1000003",
        "client_id": DEMO_CLIENT_ID,
        "psuid": "1.demo.stranger",
    },
}
"""Tokens the demo accepts: give `demo-reader` read and `demo-writer` write access;
`demo-stranger` is a valid Yandex user with no access (403)."""


class YandexIdSandbox:
    """`GET /info?format=json` on 127.0.0.1 (or `host`), answering for the tokens given."""

    def __init__(
        self,
        tokens: dict[str, dict[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hang_seconds: float = 30.0,
    ) -> None:
        self.tokens: dict[str, dict[str, Any]] = dict(DEMO_TOKENS if tokens is None else tokens)
        self.mode: Mode = "ok"
        self.hang_seconds = hang_seconds
        self.requests = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to set as `YANDEX_LOGIN_URL`."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> YandexIdSandbox:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="yandex-id-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the command line uses this)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving and release any hanging request."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def set_mode(self, mode: Mode) -> None:
        """Answer normally (`ok`), with 503 (`error`), or not at all for `hang_seconds` (`hang`)."""
        if mode not in ("ok", "error", "hang"):
            raise ValueError(f"unknown mode {mode!r}; use 'ok', 'error' or 'hang'")
        self.mode = mode
        if mode == "hang":
            self._release.clear()
        else:
            self._release.set()

    def answer(self, authorization: str | None, query: str) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one `/info` request (the HTTP handler calls this)."""
        with self._lock:
            self.requests += 1
        if self.mode == "hang":
            self._release.wait(self.hang_seconds)
        if self.mode == "error":
            return 503, {"error": "service temporarily unavailable"}
        fmt = parse_qs(query).get("format", ["json"])[0]
        if fmt != "json":
            return 400, {"error": f"unsupported format {fmt!r}; this stand-in speaks json"}
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() not in ("oauth", "bearer") or not token.strip():
            return 401, {"error": "authorization required"}
        info = self.tokens.get(token.strip())
        if info is None:
            return 401, {"error": "invalid token"}
        return 200, dict(info)

    def __enter__(self) -> YandexIdSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(sandbox: YandexIdSandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            if parts.path != "/info":
                status, body = 404, {"error": f"no such path {parts.path!r}; try /info"}
            else:
                status, body = sandbox.answer(self.headers.get("Authorization"), parts.query)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("yandex-id sandbox: " + format, *args)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devtools.sandbox.yandex_id [--host H] [--port P]`: serve DEMO_TOKENS."""
    parser = argparse.ArgumentParser(
        prog="yandex-id", description="Local stand-in for Yandex ID's GET /info?format=json."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sandbox = YandexIdSandbox(DEMO_TOKENS, host=args.host, port=args.port)
    print(f"Yandex ID stand-in on {sandbox.url}  (set YANDEX_LOGIN_URL={sandbox.url})", flush=True)
    for token, info in DEMO_TOKENS.items():
        print(f"  token {token!r} -> login {info['login']!r}", flush=True)
    try:
        sandbox.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
