"""`/health`: the service is up and reaches PostgreSQL and S3 (no auth)."""

from __future__ import annotations

import logging
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ApiSettingsDep, ResourcesDep, SettingsDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

PROBE_CACHE_SECONDS = 1.5
"""How long one PostgreSQL + S3 probe answers `/health`."""


class Check(BaseModel):
    """One dependency's state."""

    ok: bool
    seconds: float = Field(description="How long the check took")
    error: str | None = Field(None, description="Why it failed (no secrets)")


class Health(BaseModel):
    """The service's state: `ok` only when every dependency is reachable."""

    status: Literal["ok", "degraded"]
    postgres: Check
    s3: Check


def _check_postgres(settings: SettingsDep, api: ApiSettingsDep, resources: ResourcesDep) -> Check:
    started = time.monotonic()
    try:
        pool = resources.pool(settings.db, min(api.db_pool_timeout_seconds, 5.0))
        with pool.connection(timeout=min(api.db_pool_timeout_seconds, 5.0)) as conn:
            conn.execute("SELECT 1").fetchone()
        return Check(ok=True, seconds=round(time.monotonic() - started, 3))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("health: PostgreSQL check failed: %s", type(exc).__name__)
        return Check(
            ok=False, seconds=round(time.monotonic() - started, 3), error=type(exc).__name__
        )


def _check_s3(settings: SettingsDep, resources: ResourcesDep) -> Check:
    started = time.monotonic()
    try:
        store = resources.store(settings.s3)
        store.client.head_bucket(Bucket=store.bucket)
        return Check(ok=True, seconds=round(time.monotonic() - started, 3))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("health: S3 check failed: %s", type(exc).__name__)
        detail = type(exc).__name__
        if type(exc).__name__ == "SettingsError":
            detail = str(exc)
        return Check(ok=False, seconds=round(time.monotonic() - started, 3), error=detail)


@router.get(
    "/health",
    name="read_health",
    response_model=Health,
    summary="Is the service up, and can it reach PostgreSQL and S3?",
    responses={503: {"model": Health, "description": "PostgreSQL or S3 is unreachable"}},
)
def health(settings: SettingsDep, api: ApiSettingsDep, resources: ResourcesDep) -> JSONResponse:
    """200 with `status: ok` when PostgreSQL and S3 answer, 503 with `degraded` otherwise.

    The probes' answer is reused for `PROBE_CACHE_SECONDS`, so frequent polling (load
    balancers, uptime checks) costs one probe per period and answers as fast as any endpoint.
    """

    def probe() -> Health:
        postgres = _check_postgres(settings, api, resources)
        s3 = _check_s3(settings, resources)
        ok = postgres.ok and s3.ok
        return Health(status="ok" if ok else "degraded", postgres=postgres, s3=s3)

    body = resources.probes.get("health", PROBE_CACHE_SECONDS, probe)
    status = 200 if body.status == "ok" else 503
    return JSONResponse(status_code=status, content=body.model_dump())
