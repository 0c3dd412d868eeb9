"""Dependencies the routers share: settings, the caller (read/write), the DB, the S3 store."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security

from api.auth import (
    IDENTITY_STATE,
    Access,
    Identity,
    IdentityChecker,
    TokenCache,
    authorize,
    bearer_scheme,
)
from api.errors import ApiError
from api.settings import ApiSettings, get_api_settings
from dwh_helper.config import PostgresSettings, S3Settings, Settings
from dwh_helper.config import get_settings as _read_settings
from dwh_helper.dwh.repository import Repository
from dwh_helper.storage.patch import KeyLocks
from dwh_helper.storage.s3 import ObjectStore, store_from_settings

log = logging.getLogger(__name__)


def get_settings() -> Settings:
    """The process-wide settings (cached); tests override this dependency."""
    return _read_settings()


SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]


class Resources:
    """Long-lived clients of one app: connection pools, S3 stores, the Yandex ID checker."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tokens = TokenCache(clock)
        self.identities = IdentityChecker(self.tokens)
        self.probes = ProbeCache(clock)
        self.key_locks = KeyLocks()
        self._lock = threading.Lock()
        self._pools: dict[str, Any] = {}
        self._stores: dict[tuple[Any, ...], ObjectStore] = {}

    def pool(self, db: PostgresSettings, timeout: float) -> Any:
        """A `psycopg_pool.ConnectionPool` (autocommit) for this server, opened once."""
        from psycopg_pool import ConnectionPool

        conninfo = db.conninfo()
        with self._lock:
            pool = self._pools.get(conninfo)
            if pool is None:
                pool = ConnectionPool(
                    conninfo,
                    min_size=min(db.minconn, db.maxconn),
                    max_size=db.maxconn,
                    kwargs={"autocommit": True},
                    timeout=timeout,
                    open=True,
                    name="dwh-api",
                )
                self._pools[conninfo] = pool
                log.info("opened PostgreSQL pool (%d..%d connections)", db.minconn, db.maxconn)
            return pool

    def store(self, s3: S3Settings) -> ObjectStore:
        """An ObjectStore for the configured bucket, built once per S3 settings."""
        key = (
            s3.endpoint_url,
            s3.region,
            s3.bucket_name,
            s3.access_key_id.get_secret_value() if s3.access_key_id else None,
            s3.multipart_threshold_mb,
        )
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = store_from_settings(s3)
                self._stores[key] = store
            return store

    def close(self) -> None:
        """Close the pools (the Yandex ID client is closed by the app's lifespan)."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
            self._stores.clear()


class ProbeCache:
    """The last answer of a slow probe (the health check), reused for `ttl` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, Any]] = {}

    def get(self, name: str, ttl: float, probe: Callable[[], Any]) -> Any:
        """The cached answer of `name` if younger than `ttl`, else `probe()` (one at a time)."""
        with self._lock:
            entry = self._answers.get(name)
            now = self.clock()
            if entry is not None and now - entry[0] < ttl:
                return entry[1]
            answer = probe()
            self._answers[name] = (self.clock(), answer)
            return answer


def get_resources(request: Request) -> Resources:
    """The app's shared clients."""
    resources = getattr(request.app.state, "resources", None)
    if resources is None:
        raise ApiError(503, "the app was built without resources; build it with create_app()")
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_repository(
    settings: SettingsDep, api_settings: ApiSettingsDep, resources: ResourcesDep
) -> Repository:
    """A Repository on the pooled DWH connections, with the `DB_*` limits."""
    db = settings.db
    return Repository(
        resources.pool(db, api_settings.db_pool_timeout_seconds),
        max_params=db.max_params_per_query,
        safety_factor=db.safety_factor,
        max_rows_per_insert=db.max_rows_per_insert,
        default_limit=db.select_default_limit,
        max_limit=db.select_max_limit,
    )


def get_store(settings: SettingsDep, resources: ResourcesDep) -> ObjectStore:
    """The ObjectStore of `S3_BUCKET_NAME` (503 naming the variable when unset)."""
    return resources.store(settings.s3)


RepoDep = Annotated[Repository, Depends(get_repository)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


def get_key_locks(resources: ResourcesDep) -> KeyLocks:
    """The per-key locks of this app's S3 read-modify-writes."""
    return resources.key_locks


LocksDep = Annotated[KeyLocks, Depends(get_key_locks)]


async def _caller(request: Request, access: Access) -> Identity:
    checked = request.scope.get("state", {}).get(IDENTITY_STATE)
    if isinstance(checked, Identity):
        return checked
    overrides = request.app.dependency_overrides
    settings = overrides.get(get_settings, get_settings)()
    resources = get_resources(request)
    return await authorize(
        resources.identities, settings, request.headers.get("Authorization"), access
    )


async def require_read(
    request: Request, _credentials: Annotated[Any, Security(bearer_scheme)] = None
) -> Identity:
    """The caller, if their login is in AUTH_READ_ACCESS or AUTH_WRITE_ACCESS; else 401/403."""
    return await _caller(request, "read")


async def require_write(
    request: Request, _credentials: Annotated[Any, Security(bearer_scheme)] = None
) -> Identity:
    """The caller, if their login is in AUTH_WRITE_ACCESS; else 401/403."""
    return await _caller(request, "write")


Reader = Annotated[Identity, Depends(require_read)]
Writer = Annotated[Identity, Depends(require_write)]
