"""The request guard: an ASGI middleware that decides before the app reads a byte of the body.

For a request that matches an endpoint it checks, in order: a declared `Content-Length`
against the endpoint's limit (413), the caller's token and access (401/403/503, on the event
loop), and the query parameters against those the endpoint declares (422). Only then does the
app run, with a `receive` that counts the body bytes actually received and answers 413 past
the limit, with or without `Content-Length` (chunked bodies included). An anonymous caller
therefore costs no memory and no temporary file. Endpoints inherit all of this from their
dependencies: one that depends on `require_write` needs write access, on `require_read` read
access, on neither none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import IDENTITY_STATE, Access, authorize
from api.deps import get_settings, require_read, require_write
from api.errors import ApiError, ErrorBody, FieldError
from api.settings import ApiSettings, get_api_settings

MB = 1024 * 1024

SMALLER_BODY_LIMITS: dict[str, str] = {"/db/": "db_max_body_mb"}
"""Path prefix → the `ApiSettings` field of its (smaller) body limit; others: max_body_mb."""


class BodyTooLarge(HTTPException):
    """The body grew past the endpoint's limit while it was being received."""

    def __init__(self, limit_mb: int, setting: str) -> None:
        super().__init__(
            413,
            f"the body is larger than the limit of {limit_mb} MB "
            f"(API_{setting.upper()}); send less data per request",
        )


@dataclass(frozen=True)
class RouteRule:
    """What the guard enforces on one endpoint."""

    access: Access
    query_names: frozenset[str]
    limit_setting: str


def _access_of(dependant: Dependant) -> Access:
    calls = {item.call for item in _walk(dependant)}
    if require_write in calls:
        return "write"
    if require_read in calls:
        return "read"
    return "public"


def _walk(dependant: Dependant) -> list[Dependant]:
    found = [dependant]
    for sub in dependant.dependencies:
        found.extend(_walk(sub))
    return found


def rule_for(route: APIRoute) -> RouteRule:
    """The guard's rule for an endpoint, read from its dependencies and path."""
    flat = get_flat_dependant(route.dependant)
    setting = "max_body_mb"
    for prefix, name in SMALLER_BODY_LIMITS.items():
        if route.path.startswith(prefix):
            setting = name
    return RouteRule(
        access=_access_of(route.dependant),
        query_names=frozenset(param.alias for param in flat.query_params),
        limit_setting=setting,
    )


class RequestGuard:
    """ASGI middleware: limits, auth and query names before the body; counted body bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rules: dict[int, RouteRule] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        route = _matching_route(app, scope)
        if route is None:
            await self.app(scope, receive, send)  # 404/405 from the router, body unread
            return
        rule = self._rules.get(id(route))
        if rule is None:
            rule = self._rules[id(route)] = rule_for(route)
        api = _api_settings(app)
        limit_mb: int = getattr(api, rule.limit_setting)
        try:
            _check_declared_length(scope, limit_mb, rule.limit_setting)
            if rule.access != "public":
                scope.setdefault("state", {})[IDENTITY_STATE] = await _authorize(
                    app, scope, rule.access
                )
            _check_query_names(scope, rule.query_names)
        except ApiError as exc:
            await send_error(send, exc.status_code, exc.detail, exc.errors, exc.headers)
            return
        await self._run(scope, receive, send, limit_mb, rule.limit_setting)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, limit_mb: int, setting: str
    ) -> None:
        limit = limit_mb * MB
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit_mb, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # raised outside FastAPI's handlers (e.g. a streamed body)
            if not started:
                await send_error(send, 413, str(exc.detail), [_body_error(str(exc.detail))])


def _body_error(message: str) -> FieldError:
    return FieldError(field="body", message=message)


def _matching_route(app: FastAPI, scope: Scope) -> APIRoute | None:
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route if isinstance(route, APIRoute) else None
    return None


def _api_settings(app: FastAPI) -> ApiSettings:
    return app.dependency_overrides.get(get_api_settings, get_api_settings)()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _check_declared_length(scope: Scope, limit_mb: int, setting: str) -> None:
    declared = _header(scope, b"content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(
            400, f"Content-Length {declared[:20]!r} is not a number", field="Content-Length"
        )
    if int(declared) > limit_mb * MB:
        raise ApiError(
            413,
            f"the body has {declared} bytes; the limit is {limit_mb} MB (API_{setting.upper()})",
            field="body",
        )


async def _authorize(app: FastAPI, scope: Scope, access: Access) -> Any:
    resources = getattr(app.state, "resources", None)
    if resources is None:
        raise ApiError(503, "the app was built without resources; build it with create_app()")
    try:
        settings = app.dependency_overrides.get(get_settings, get_settings)()
    except Exception as exc:  # noqa: BLE001 - a broken configuration is the operator's 503
        raise ApiError(503, f"the service is not configured: {exc}") from None
    authorization = _header(scope, b"authorization")
    return await authorize(resources.identities, settings, authorization, access)


def _check_query_names(scope: Scope, known: frozenset[str]) -> None:
    from urllib.parse import parse_qsl

    query = scope.get("query_string", b"").decode("latin-1")
    names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    unknown = sorted(names - known)
    if not unknown:
        return
    valid = ", ".join(sorted(known)) or "none"
    errors = [
        FieldError(field=name, message=f"unknown query parameter; valid: {valid}")
        for name in unknown[:20]
    ]
    hint = " (pages are followed with `after`, from the `next` link)" if "offset" in unknown else ""
    raise ApiError(
        422,
        f"unknown query parameter(s) {', '.join(repr(n[:40]) for n in unknown[:20])}; "
        f"valid: {valid}{hint}",
        errors=errors,
    )


async def send_error(
    send: Send,
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with the API's error body straight from ASGI (the connection is then closed)."""
    body = json.dumps(ErrorBody(detail=detail, errors=errors or []).model_dump()).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw_headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
