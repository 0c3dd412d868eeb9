"""Yandex ID token check: who the caller is (cached both ways), and whether they may read or write.

The check runs on the event loop with an async HTTP client: a slow Yandex ID holds no worker
thread, so cached-token callers and `/health` never wait for it. One request per token is in
flight at a time (concurrent callers with the same token share it), at most
`MAX_CONCURRENT_CHECKS` in all, and a token Yandex ID refused is remembered for
`REFUSED_TTL_SECONDS` (by its SHA-256, never the token itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from fastapi.security import HTTPBearer

from api.errors import ApiError
from dwh_helper.config import Settings

log = logging.getLogger(__name__)

TOKEN_HELP = (
    "Get a Yandex ID OAuth token at "
    "https://oauth.yandex.ru/authorize?response_type=token&client_id=<YANDEX_CLIENT_ID> "
    "and send it as `Authorization: OAuth <token>` (or `Bearer <token>`)."
)

bearer_scheme = HTTPBearer(
    scheme_name="YandexOAuth",
    description=(
        "A Yandex ID OAuth token. " + TOKEN_HELP + " In Swagger UI paste only the token; "
        "it is sent as `Bearer <token>`."
    ),
    auto_error=False,
)

Access = Literal["public", "read", "write"]

REFUSED_TTL_SECONDS = 30.0
"""How long a token Yandex ID refused is answered 401 without asking again."""
MAX_CONCURRENT_CHECKS = 16
"""Token checks in flight at Yandex ID at once (per process)."""

_WWW_AUTHENTICATE = 'OAuth realm="dwh-helper"'
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Identity:
    """The Yandex ID user behind a token."""

    login: str
    id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Yandex ID refused a token: the 401 detail to repeat while the refusal is cached."""

    detail: str


class TokenCache:
    """Yandex ID answers (identities and refusals), keyed by a SHA-256 of the token, with TTLs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Identity | Refusal]] = {}

    @staticmethod
    def key(token: str) -> str:
        """The cache key of a token (never the token itself)."""
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Identity | Refusal | None:
        """The cached answer, or None when absent or expired."""
        key = self.key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, token: str, answer: Identity | Refusal, ttl: float) -> None:
        """Remember an answer for `ttl` seconds (no-op when ttl is 0)."""
        if ttl <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= _MAX_CACHED:
                for key in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
                    del self._entries[key]
                if len(self._entries) >= _MAX_CACHED:
                    self._entries.pop(next(iter(self._entries)))
            self._entries[self.key(token)] = (now + ttl, answer)

    def clear(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._entries.clear()


def _unauthorized(detail: str, error: str = "invalid_token") -> ApiError:
    return ApiError(
        401,
        f"{detail}. {TOKEN_HELP}",
        field="Authorization",
        headers={"WWW-Authenticate": f'{_WWW_AUTHENTICATE}, error="{error}"'},
    )


def _unavailable(detail: str) -> ApiError:
    return ApiError(503, f"cannot verify the token now: {detail}", headers={"Retry-After": "5"})


def token_from_header(authorization: str | None) -> str:
    """The token of an `Authorization: OAuth|Bearer <token>` header, or a 401."""
    if not authorization:
        raise ApiError(
            401,
            f"no Authorization header. {TOKEN_HELP}",
            field="Authorization",
            headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("oauth", "bearer") or not token:
        raise _unauthorized("the Authorization header must be `OAuth <token>` or `Bearer <token>`")
    if len(token) > 4096 or any(ord(char) < 33 or ord(char) > 126 for char in token):
        raise _unauthorized("the token has characters or a length no Yandex token has")
    return token


async def fetch_identity(
    client: httpx.AsyncClient, login_url: str, token: str, timeout: float
) -> Identity:
    """Ask Yandex ID who owns `token`: 401 for a token it refuses, 503 when it cannot answer.

    A 404 or 400 means the service is pointed at the wrong place (`YANDEX_LOGIN_URL`): that
    is 503 with a message for the operator, not a verdict on the token.
    """
    url = login_url.rstrip("/") + "/info"
    started = time.monotonic()
    try:
        response = await client.get(
            url,
            params={"format": "json"},
            headers={"Authorization": f"OAuth {token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        log.warning("Yandex ID unreachable (%s) after %.2fs", type(exc).__name__, _since(started))
        raise _unavailable(f"Yandex ID is unreachable ({type(exc).__name__})") from None
    status = response.status_code
    if status >= 500 or status == 429:
        log.warning("Yandex ID answered %d after %.2fs", status, _since(started))
        raise _unavailable(f"Yandex ID answered {status}")
    if status in (400, 404) or 300 <= status < 400:
        log.error(
            "Yandex ID at %s answered %d: check YANDEX_LOGIN_URL (expected e.g. "
            "https://login.yandex.ru)",
            url,
            status,
        )
        raise _unavailable(
            f"Yandex ID answered {status}, which means the service is misconfigured "
            "(the operator should check YANDEX_LOGIN_URL)"
        )
    if status != 200:
        log.info("Yandex ID refused a token (%d)", status)
        raise _unauthorized("Yandex ID does not accept this token (invalid, expired or revoked)")
    try:
        info: Any = response.json()
        login = info["login"]
        if not isinstance(login, str) or not login:
            raise ValueError("empty login")
    except (ValueError, KeyError, TypeError):
        raise _unavailable("Yandex ID sent no login") from None
    log.info("Yandex ID verified login %s in %.2fs", login, _since(started))
    return Identity(
        login=login,
        id=str(info["id"]) if info.get("id") is not None else None,
        client_id=info.get("client_id"),
    )


def _since(started: float) -> float:
    return time.monotonic() - started


class IdentityChecker:
    """Token → identity on the event loop: cache first, one Yandex ID request per token in
    flight, at most `max_concurrent` requests at once, refusals cached briefly."""

    def __init__(self, cache: TokenCache, max_concurrent: int = MAX_CONCURRENT_CHECKS) -> None:
        self.cache = cache
        self.max_concurrent = max_concurrent
        self.calls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Future[Identity]] = {}

    def _bind(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._client is None or self._slots is None:
            self._loop = loop
            self._client = httpx.AsyncClient(follow_redirects=False)
            self._slots = asyncio.Semaphore(self.max_concurrent)
            self._inflight = {}
        return self._client, self._slots

    async def identity(self, token: str, settings: Settings) -> Identity:
        """The identity behind `token` (cached), or the 401/503 ApiError."""
        cached = self.cache.get(token)
        if isinstance(cached, Identity):
            return cached
        if isinstance(cached, Refusal):
            raise _unauthorized(cached.detail)
        self._bind()
        key = self.cache.key(token)
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._check(token, settings))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _check(self, token: str, settings: Settings) -> Identity:
        client, slots = self._bind()
        timeout = settings.yandex.timeout_seconds
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except TimeoutError:
            raise _unavailable("too many token checks are waiting for Yandex ID") from None
        try:
            self.calls += 1
            identity = await fetch_identity(client, settings.yandex.login_url, token, timeout)
        except ApiError as exc:
            if exc.status_code == 401:
                detail = exc.detail.removesuffix(f". {TOKEN_HELP}")
                self.cache.put(token, Refusal(detail), REFUSED_TTL_SECONDS)
            raise
        finally:
            slots.release()
        self.cache.put(token, identity, settings.auth.cache_ttl_seconds)
        return identity

    async def aclose(self) -> None:
        """Close the HTTP client (call on the loop that used it)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


def _allowed(login: str, logins: list[str]) -> bool:
    wanted = login.casefold()
    return any(item.casefold() == wanted for item in logins)


def check_access(identity: Identity, settings: Settings, access: Access) -> Identity:
    """The caller when their login may `access` (read: AUTH_READ/WRITE_ACCESS), else 401/403."""
    pinned = settings.auth.client_id
    if pinned and identity.client_id != pinned:
        raise _unauthorized("this token was issued to another application (AUTH_CLIENT_ID)")
    auth = settings.auth
    if access == "write" and not _allowed(identity.login, auth.write_access):
        raise ApiError(
            403,
            f"login {identity.login!r} has no write access; ask to be added to AUTH_WRITE_ACCESS",
        )
    if access == "read" and not (
        _allowed(identity.login, auth.read_access) or _allowed(identity.login, auth.write_access)
    ):
        raise ApiError(
            403, f"login {identity.login!r} has no read access; ask to be added to AUTH_READ_ACCESS"
        )
    return identity


async def authorize(
    checker: IdentityChecker, settings: Settings, authorization: str | None, access: Access
) -> Identity:
    """The caller behind an `Authorization` header, allowed to `access`; else 401/403/503."""
    token = token_from_header(authorization)
    identity = await checker.identity(token, settings)
    return check_access(identity, settings, access)


IDENTITY_STATE = "identity"
"""Key under `scope["state"]` where the request guard leaves the checked caller."""
