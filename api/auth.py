"""Yandex ID token check: who the caller is (cached), and whether they may read or write."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from api.deps import ResourcesDep, SettingsDep
from api.errors import ApiError

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

_WWW_AUTHENTICATE = 'OAuth realm="dwh-helper"'
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Identity:
    """The Yandex ID user behind a token."""

    login: str
    id: str | None = None
    client_id: str | None = None


class TokenCache:
    """Positive Yandex ID answers, keyed by a SHA-256 of the token, expiring after a TTL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Identity]] = {}

    @staticmethod
    def key(token: str) -> str:
        """The cache key of a token (never the token itself)."""
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Identity | None:
        """The cached identity, or None when absent or expired."""
        key = self.key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, token: str, identity: Identity, ttl: float) -> None:
        """Remember an identity for `ttl` seconds (no-op when ttl is 0)."""
        if ttl <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= _MAX_CACHED:
                for key in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
                    del self._entries[key]
                if len(self._entries) >= _MAX_CACHED:
                    self._entries.pop(next(iter(self._entries)))
            self._entries[self.key(token)] = (now + ttl, identity)

    def clear(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._entries.clear()


def _unauthorized(detail: str, error: str = "invalid_token") -> ApiError:
    return ApiError(
        401,
        f"{detail}. {TOKEN_HELP}",
        headers={"WWW-Authenticate": f'{_WWW_AUTHENTICATE}, error="{error}"'},
    )


def token_from_header(authorization: str | None) -> str:
    """The token of an `Authorization: OAuth|Bearer <token>` header, or a 401."""
    if not authorization:
        raise ApiError(
            401,
            f"no Authorization header. {TOKEN_HELP}",
            headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("oauth", "bearer") or not token:
        raise _unauthorized("the Authorization header must be `OAuth <token>` or `Bearer <token>`")
    if len(token) > 4096 or any(ord(char) < 33 or ord(char) > 126 for char in token):
        raise _unauthorized("the token has characters or a length no Yandex token has")
    return token


def fetch_identity(client: httpx.Client, login_url: str, token: str, timeout: float) -> Identity:
    """Ask Yandex ID who owns `token`: 401 for a token it refuses, 503 when it cannot answer."""
    url = login_url.rstrip("/") + "/info"
    started = time.monotonic()
    try:
        response = client.get(
            url,
            params={"format": "json"},
            headers={"Authorization": f"OAuth {token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        log.warning("Yandex ID unreachable (%s) after %.2fs", type(exc).__name__, _since(started))
        raise ApiError(
            503,
            f"cannot verify the token now: Yandex ID is unreachable ({type(exc).__name__})",
            headers={"Retry-After": "5"},
        ) from None
    if response.status_code >= 500 or response.status_code == 429:
        log.warning("Yandex ID answered %d after %.2fs", response.status_code, _since(started))
        raise ApiError(
            503,
            f"cannot verify the token now: Yandex ID answered {response.status_code}",
            headers={"Retry-After": "5"},
        )
    if response.status_code != 200:
        log.info("Yandex ID refused a token (%d)", response.status_code)
        raise _unauthorized("Yandex ID does not accept this token (invalid, expired or revoked)")
    try:
        info: Any = response.json()
        login = info["login"]
        if not isinstance(login, str) or not login:
            raise ValueError("empty login")
    except (ValueError, KeyError, TypeError):
        raise ApiError(503, "cannot verify the token now: Yandex ID sent no login") from None
    log.info("Yandex ID verified login %s in %.2fs", login, _since(started))
    return Identity(
        login=login,
        id=str(info["id"]) if info.get("id") is not None else None,
        client_id=info.get("client_id"),
    )


def _since(started: float) -> float:
    return time.monotonic() - started


def authenticate(
    request: Request,
    settings: SettingsDep,
    resources: ResourcesDep,
    _credentials: Annotated[Any, Security(bearer_scheme)] = None,
) -> Identity:
    """The caller's Yandex ID identity (cached for `AUTH_CACHE_TTL_SECONDS`), or 401/503."""
    token = token_from_header(request.headers.get("Authorization"))
    identity = resources.tokens.get(token)
    if identity is None:
        identity = fetch_identity(
            resources.http, settings.yandex.login_url, token, settings.yandex.timeout_seconds
        )
        resources.tokens.put(token, identity, settings.auth.cache_ttl_seconds)
    pinned = settings.auth.client_id
    if pinned and identity.client_id != pinned:
        raise _unauthorized("this token was issued to another application (AUTH_CLIENT_ID)")
    return identity


def _allowed(login: str, logins: list[str]) -> bool:
    wanted = login.casefold()
    return any(item.casefold() == wanted for item in logins)


def require_read(
    identity: Annotated[Identity, Depends(authenticate)], settings: SettingsDep
) -> Identity:
    """The caller, if their login is in AUTH_READ_ACCESS or AUTH_WRITE_ACCESS; else 403."""
    auth = settings.auth
    if _allowed(identity.login, auth.read_access) or _allowed(identity.login, auth.write_access):
        return identity
    raise ApiError(
        403, f"login {identity.login!r} has no read access; ask to be added to AUTH_READ_ACCESS"
    )


def require_write(
    identity: Annotated[Identity, Depends(authenticate)], settings: SettingsDep
) -> Identity:
    """The caller, if their login is in AUTH_WRITE_ACCESS; else 403."""
    if _allowed(identity.login, settings.auth.write_access):
        return identity
    raise ApiError(
        403, f"login {identity.login!r} has no write access; ask to be added to AUTH_WRITE_ACCESS"
    )


Reader = Annotated[Identity, Depends(require_read)]
Writer = Annotated[Identity, Depends(require_write)]
