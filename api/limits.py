"""Refuse request bodies over `API_MAX_BODY_MB` before they are read."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from api.settings import get_api_settings


class BodySizeLimit:
    """ASGI middleware: 413 when `Content-Length` exceeds `API_MAX_BODY_MB` (checked up front)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            declared = _header(scope, b"content-length")
            if declared is not None:
                limit = _limit_mb(scope)
                problem = None
                if not declared.isdigit():
                    status, problem = 400, f"Content-Length {declared[:20]!r} is not a number"
                elif int(declared) > limit * 1024 * 1024:
                    status = 413
                    problem = (
                        f"the body has {declared} bytes; the limit is API_MAX_BODY_MB={limit} MB"
                    )
                if problem is not None:
                    await _answer(send, status, problem)
                    return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _limit_mb(scope: Scope) -> int:
    app: Any = scope.get("app")
    factory = get_api_settings
    if app is not None:
        factory = app.dependency_overrides.get(get_api_settings, get_api_settings)
    return factory().max_body_mb


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
