"""Builds the FastAPI app: `uvicorn api.main:app`, or `create_app(settings)` in tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.auth import TOKEN_HELP
from api.deps import Resources, get_settings
from api.errors import error_responses, install_error_handlers
from api.guard import RequestGuard
from api.routers import amplitude, appmetrica, db, health, loads, s3, transform
from api.settings import ApiSettings, get_api_settings
from dwh_helper.config import Settings, configure_logging

DESCRIPTION = f"""
The DWH Helper companion service: Amplitude and AppMetrica exports on demand,
the eight DWH tables over REST, objects of the raw-file bucket, and the
user-properties ETL.

**Authentication.** {TOKEN_HELP} Click **Authorize** and paste the token.
Logins in `AUTH_READ_ACCESS` may call read endpoints; logins in
`AUTH_WRITE_ACCESS` may call every endpoint.
"""


def _token_link(settings: Settings | None) -> str:
    try:
        client_id = (settings or get_settings()).yandex.client_id
    except Exception:  # noqa: BLE001 - the docs must build even with broken settings
        client_id = None
    if not client_id:
        return ""
    url = f"https://oauth.yandex.ru/authorize?response_type=token&client_id={client_id}"
    return f"\n\n[Get a token for this service]({url})"


def _select_max_limit(settings: Settings | None) -> int:
    """`DB_SELECT_MAX_LIMIT` of these settings (None: the environment's; its default when the
    environment's settings do not load, so the app and its docs still build)."""
    try:
        return (settings or get_settings()).db.select_max_limit
    except Exception:  # noqa: BLE001 - the docs must build even with broken settings
        return db.DEFAULT_MAX_LIMIT


def operation_id(route: APIRoute) -> str:
    """The OpenAPI `operationId` of a route: its name (stable, e.g. `read_events_part`)."""
    return route.name


def configure(
    app: FastAPI,
    settings: Settings | None = None,
    api_settings: ApiSettings | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Point an app at these settings (None: the environment's) with fresh shared clients."""
    old = getattr(app.state, "resources", None)
    if old is not None:
        old.close()
    app.state.resources = Resources(clock)
    app.dependency_overrides.pop(get_settings, None)
    app.dependency_overrides.pop(get_api_settings, None)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    if api_settings is not None:
        app.dependency_overrides[get_api_settings] = lambda: api_settings
    return app


def create_app(
    settings: Settings | None = None,
    api_settings: ApiSettings | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The app; `settings`/`api_settings` override the environment; `clock` drives auth caching."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        yield
        await app.state.resources.identities.aclose()
        app.state.resources.close()

    app = FastAPI(
        title="DWH Helper API",
        version="0.1.0",
        description=DESCRIPTION + _token_link(settings),
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": True},
        generate_unique_id_function=operation_id,
    )
    configure(app, settings, api_settings, clock=clock)
    install_error_handlers(app)
    app.add_middleware(RequestGuard)
    app.include_router(health.router)
    # The `limit` bound in OpenAPI is fixed when the app is built: it follows the settings given
    # here (re-pointing the app with `configure` keeps it; the repository still enforces the new
    # setting with 422).
    app.include_router(db.build_router(_select_max_limit(settings)))
    for module in (s3, amplitude, appmetrica, transform, loads):
        app.include_router(module.router)
    document_common_errors(app)
    return app


ERROR_BODY_REF = "#/components/schemas/ErrorBody"


def document_common_errors(app: FastAPI) -> None:
    """Declare the answers the request guard and the error handlers give on every endpoint:
    422 (unknown query parameters), 500, and for endpoints with a body 400 and 413; errors of
    endpoints answering other media (HTML, files) are declared as the JSON they are."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        media = getattr(route.response_class, "media_type", None)
        if media != "application/json":
            for code, entry in list(route.responses.items()):
                if int(code) >= 400 and "model" in entry:
                    route.responses[code] = {
                        "description": entry.get("description", "Error"),
                        "content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}},
                    }
        codes = [422, 500] + ([400, 413] if route.body_field is not None else [])
        for code, entry in error_responses(*codes).items():
            route.responses.setdefault(
                code,
                {
                    "description": entry["description"],
                    "content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}},
                },
            )


app = create_app()
