"""S3 object keys and prefixes as query parameters: what is accepted, and the 422 otherwise."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from api.deps import ApiSettingsDep
from api.errors import ApiError

_SEGMENT = (
    r"(?:[^/.\x00-\x1f\x7f][^/\x00-\x1f\x7f]*"
    r"|\.[^/.\x00-\x1f\x7f][^/\x00-\x1f\x7f]*"
    r"|\.\.[^/\x00-\x1f\x7f]+)"
)
KEY_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
"""What `_check_path` accepts as a key, declared in OpenAPI: segments joined by `/`, none
empty, `.` or `..`, no control characters."""
PREFIX_PATTERN = rf"^(?:{_SEGMENT}(?:/{_SEGMENT})*/?)?$"
"""What `_check_path` accepts as a prefix: a key, a key ending in `/`, or empty."""


def _check_path(value: str, name: str, max_length: int, allow_empty: bool) -> str:
    if not value and not allow_empty:
        raise ApiError(422, f"{name} must not be empty", field=name)
    if len(value.encode()) > max_length:
        raise ApiError(
            422, f"{name} is {len(value.encode())} bytes; the limit is {max_length}", field=name
        )
    if value.startswith("/"):
        raise ApiError(422, f"{name} must not start with '/': {value[:80]!r}", field=name)
    if any(part in (".", "..") for part in value.split("/")):
        raise ApiError(
            422, f"{name} must not contain '.' or '..' segments: {value[:80]!r}", field=name
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ApiError(422, f"{name} must not contain control characters", field=name)
    if "//" in value:
        raise ApiError(
            422, f"{name} must not contain empty segments ('//'): {value[:80]!r}", field=name
        )
    return value


def valid_key(
    api: ApiSettingsDep,
    key: Annotated[
        str,
        Query(
            description="Object key, e.g. `raw/amplitude/web/2024/05/01/a.zip` (at most 1,024 "
            "UTF-8 bytes)",
            json_schema_extra={"minLength": 1, "maxLength": 1024, "pattern": KEY_PATTERN},
        ),
    ],
) -> str:
    """The `key` parameter, checked: not empty, no `..` segments, within the length limit."""
    _check_path(key, "key", api.s3_max_key_length, allow_empty=False)
    if key.endswith("/"):
        raise ApiError(422, f"key must name an object, not a folder: {key[:80]!r}", field="key")
    return key


def valid_prefix(
    api: ApiSettingsDep,
    prefix: Annotated[
        str,
        Query(
            description="List under this prefix; '' is the bucket root",
            json_schema_extra={"maxLength": 1024, "pattern": PREFIX_PATTERN},
        ),
    ] = "",
) -> str:
    """The `prefix` parameter, checked like a key (empty allowed)."""
    return _check_path(prefix, "prefix", api.s3_max_key_length, allow_empty=True)
