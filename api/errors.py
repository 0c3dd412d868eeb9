"""Error bodies, the documented error responses, and the handlers that keep 500s away."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One invalid input: where it is and what is wrong with it."""

    field: str = Field(
        description="The parameter or body field, e.g. `sort_by` or `data[3].event_time`"
    )
    message: str


class ErrorBody(BaseModel):
    """Every error answer of this API."""

    detail: str = Field(description="What went wrong and what to change")
    errors: list[FieldError] = Field(default_factory=list, description="Invalid fields, if any")


class ApiError(Exception):
    """An error answer: HTTP status, message, optional field errors and headers."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        field: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = list(errors or [])
        if field and not self.errors:
            self.errors = [FieldError(field=field, message=detail)]
        self.headers = headers


_DESCRIPTIONS = {
    400: "Bad request (e.g. a body that cannot be parsed)",
    401: "Missing or invalid Yandex ID token (see `WWW-Authenticate`)",
    403: "The token's login has no access to this endpoint",
    404: "Not found",
    405: "Method not allowed (see `Allow`)",
    409: "Conflict with what exists",
    412: "`If-Match` names another version of the object than the current one",
    413: "Request body too large (counted as it arrives; `Content-Length` is optional)",
    416: "Range or offset past the end of the object",
    500: "An unexpected failure (a bug): the body says which; details are in the service log",
    422: "Invalid parameter or body; `errors` names each field",
    502: "The upstream service answered with an error",
    503: "A dependency (Yandex ID, PostgreSQL, S3, upstream) is unavailable or not configured",
    504: "The upstream service did not answer in time",
}


def retry_after_header(retry_after: float | None, default: int = 60) -> dict[str, str]:
    """`Retry-After` for an upstream that asked for a wait (whole seconds, rounded up), else
    `default` seconds."""
    wait = math.ceil(retry_after) if retry_after else default
    return {"Retry-After": str(wait)}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for these status codes, all with the `ErrorBody` model."""
    result: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = descriptions.get(f"e{code}", _DESCRIPTIONS.get(code, "Error"))
        result[code] = {"model": ErrorBody, "description": text}
    return result


AUTH_ERRORS = (401, 403, 503)
RETRY_LATER = {"Retry-After": "5"}


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some endpoint accepts at this path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def refused_value(exc: Exception) -> tuple[str, str]:
    """The column PostgreSQL names in a data or limit error (else `data`), and its message."""
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc).splitlines()[0])[:300]
    field = getattr(diag, "column_name", None)
    if not field:
        quoted = re.findall(r'column "([^"]+)"', str(exc))
        field = quoted[0] if quoted else None
    if not field:
        field = _index_columns(re.findall(r'index "([^"]+)"', str(exc)))
    return field, text


def _index_columns(indexes: list[str]) -> str:
    from dwh_helper.dwh.tables import DWH_TABLES

    for index in indexes:
        spec = DWH_TABLES.get(index.removesuffix("_pkey"))
        if spec is not None and index.endswith("_pkey"):
            return ",".join(spec.key)
        return index
    return "data"


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("query", "body", "path", "header", "cookie"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "body"


def _validation_body(exc: RequestValidationError) -> ErrorBody:
    errors = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON: " + str(error.get("ctx", {}).get("error", ""))
        errors.append(FieldError(field=_location(error.get("loc", ())), message=message))
    shown = "; ".join(f"{item.field}: {item.message}" for item in errors[:10])
    if len(errors) > 10:
        shown += f"; ... and {len(errors) - 10} more"
    return ErrorBody(detail=f"invalid request: {shown}", errors=errors[:100])


def _json(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _refused(status: int, detail: str, field: str, message: str) -> JSONResponse:
    """A 4xx answer naming the one field at fault."""
    return _json(
        status, ErrorBody(detail=detail, errors=[FieldError(field=field, message=message)])
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every known failure to a JSON answer with a 4xx/5xx that says what to do."""
    import botocore.exceptions
    import httpx
    import psycopg
    import psycopg_pool

    from dwh_helper.config import SettingsError
    from dwh_helper.dwh.repository import InvalidQuery
    from dwh_helper.sources.date_params import DateParamError
    from dwh_helper.storage.patch import OffsetPastEnd
    from dwh_helper.storage.s3 import ObjectNotFound

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status_code, ErrorBody(detail=exc.detail, errors=exc.errors), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        field = "body" if exc.status_code in (400, 413) else "path"
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            headers["Allow"] = ", ".join(allowed)
            detail = (
                f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
            )
            field = "method"
        elif exc.status_code == 404:
            detail = f"no endpoint at {request.url.path}; see /docs for the list"
        elif exc.status_code == 400:
            detail = f"the body cannot be parsed: {detail}"
        errors = [FieldError(field=field, message=detail)] if exc.status_code < 500 else []
        return _json(exc.status_code, ErrorBody(detail=detail, errors=errors), headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return _json(500, ErrorBody(detail=f"internal error ({type(exc).__name__}); see the logs"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, _validation_body(exc))

    @app.exception_handler(InvalidQuery)
    async def _invalid_query(request: Request, exc: InvalidQuery) -> JSONResponse:
        return _refused(422, f"{exc.field}: {exc.message}", exc.field, exc.message)

    @app.exception_handler(DateParamError)
    async def _date_param(request: Request, exc: DateParamError) -> JSONResponse:
        return _refused(422, str(exc), exc.name, str(exc))

    @app.exception_handler(ObjectNotFound)
    async def _not_found(request: Request, exc: ObjectNotFound) -> JSONResponse:
        return _json(404, ErrorBody(detail=str(exc.args[0]) if exc.args else "no such object"))

    @app.exception_handler(OffsetPastEnd)
    async def _past_end(request: Request, exc: OffsetPastEnd) -> JSONResponse:
        return _json(
            416, ErrorBody(detail=str(exc)), headers={"Content-Range": f"bytes */{exc.size}"}
        )

    @app.exception_handler(SettingsError)
    async def _settings(request: Request, exc: SettingsError) -> JSONResponse:
        log.error("%s %s: service not configured: %s", request.method, request.url.path, exc)
        return _json(503, ErrorBody(detail=f"the service is not configured: {exc}"))

    @app.exception_handler(psycopg_pool.PoolTimeout)
    async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: no database connection: %s", request.method, request.url.path, exc)
        return _json(503, ErrorBody(detail="PostgreSQL is unavailable (no connection in time)"))

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: database error: %s", request.method, request.url.path, exc)
        return _json(
            503, ErrorBody(detail="PostgreSQL is unavailable; try again later"), RETRY_LATER
        )

    @app.exception_handler(psycopg.errors.ProgramLimitExceeded)
    @app.exception_handler(psycopg.DataError)
    async def _data_error(request: Request, exc: Exception) -> JSONResponse:
        field, text = refused_value(exc)
        log.info("%s %s: PostgreSQL refused a value of %s", request.method, request.url.path, field)
        return _refused(422, f"{field}: PostgreSQL refused the value: {text}", field, text)

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _integrity(request: Request, exc: Exception) -> JSONResponse:
        diag = getattr(exc, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f" (constraint {constraint})" if constraint else ""
        field = getattr(diag, "column_name", None) or "data"
        return _refused(409, f"the rows break a table constraint{where}: {text}", field, text)

    @app.exception_handler(botocore.exceptions.EndpointConnectionError)
    @app.exception_handler(botocore.exceptions.ConnectTimeoutError)
    @app.exception_handler(botocore.exceptions.NoCredentialsError)
    async def _s3_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: S3 unavailable: %s", request.method, request.url.path, exc)
        return _json(503, ErrorBody(detail=f"S3 is unavailable: {type(exc).__name__}"))

    @app.exception_handler(botocore.exceptions.ClientError)
    async def _s3_error(request: Request, exc: botocore.exceptions.ClientError) -> JSONResponse:
        error = exc.response.get("Error", {})
        log.error("%s %s: S3 error %s", request.method, request.url.path, error.get("Code"))
        return _json(
            502,
            ErrorBody(detail=f"S3 answered {error.get('Code', '?')}: {error.get('Message', '')}"),
        )

    @app.exception_handler(httpx.TimeoutException)
    async def _upstream_timeout(request: Request, exc: Exception) -> JSONResponse:
        return _json(504, ErrorBody(detail=f"an upstream service timed out: {type(exc).__name__}"))

    @app.exception_handler(httpx.HTTPError)
    async def _upstream_error(request: Request, exc: Exception) -> JSONResponse:
        return _json(502, ErrorBody(detail=f"an upstream service failed: {type(exc).__name__}"))
