"""`/s3`: list, inspect, download, upload, replace, patch and delete objects of the bucket."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.auth import require_read, require_write
from api.deps import ApiSettingsDep, StoreDep
from api.errors import AUTH_ERRORS, ApiError, error_responses
from dwh_helper.storage.patch import patch_object
from dwh_helper.storage.s3 import MB
from dwh_helper.storage.s3 import ObjectInfo as StoredInfo

log = logging.getLogger(__name__)

router = APIRouter(prefix="/s3", tags=["s3"], dependencies=[Depends(require_read)])


class ObjectEntry(BaseModel):
    """One object of a listing."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None


class ObjectList(BaseModel):
    """Direct children of a prefix: objects and "folders" (common prefixes ending in `/`)."""

    prefix: str
    objects: list[ObjectEntry]
    folders: list[str]
    count: int = Field(description="Number of objects (folders not counted)")


class ObjectInfo(BaseModel):
    """What S3 knows about one object."""

    key: str
    size: int
    content_type: str | None
    etag: str
    last_modified: datetime | None
    version_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class WriteResult(BaseModel):
    """The object after a write."""

    key: str
    etag: str
    version_id: str | None
    size: int


class DeleteResult(BaseModel):
    """What DELETE removed."""

    key: str
    deleted: bool


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
    key: Annotated[str, Query(description="Object key, e.g. `raw/amplitude/web/2024/05/01/a.zip`")],
) -> str:
    """The `key` parameter, checked: not empty, no `..` segments, within the length limit."""
    _check_path(key, "key", api.s3_max_key_length, allow_empty=False)
    if key.endswith("/"):
        raise ApiError(422, f"key must name an object, not a folder: {key[:80]!r}", field="key")
    return key


def valid_prefix(
    api: ApiSettingsDep,
    prefix: Annotated[str, Query(description="List under this prefix; '' is the bucket root")] = "",
) -> str:
    """The `prefix` parameter, checked like a key (empty allowed)."""
    return _check_path(prefix, "prefix", api.s3_max_key_length, allow_empty=True)


KeyDep = Annotated[str, Depends(valid_key)]


def _written(info: StoredInfo) -> WriteResult:
    return WriteResult(key=info.key, etag=info.etag, version_id=info.version_id, size=info.size)


def _require(store: Any, key: str) -> StoredInfo:
    info = store.head(key)
    if info is None:
        raise ApiError(404, f"no object {key!r} in bucket {store.bucket!r}")
    return info


def _upload(store: Any, key: str, file: UploadFile) -> StoredInfo:
    started = time.monotonic()
    file.file.seek(0)
    store.upload_stream(file.file, key, content_type=file.content_type or None)
    info = _require(store, key)
    log.info("uploaded s3 key %s: %d bytes in %.2fs", key, info.size, time.monotonic() - started)
    return info


@router.get(
    "/objects",
    response_model=ObjectList,
    summary="List objects and folders directly under a prefix",
    responses=error_responses(*AUTH_ERRORS, 422, 502),
)
def list_objects(store: StoreDep, prefix: Annotated[str, Depends(valid_prefix)]) -> ObjectList:
    """Direct children of `prefix` (all pages, past S3's 1,000 keys per page)."""
    listing = store.list(prefix)
    objects = [
        ObjectEntry(key=item.key, size=item.size, etag=item.etag, last_modified=item.last_modified)
        for item in listing.objects
    ]
    return ObjectList(prefix=prefix, objects=objects, folders=listing.folders, count=len(objects))


@router.get(
    "/object-info",
    response_model=ObjectInfo,
    summary="Size, content type, ETag and last modified of one object",
    responses=error_responses(*AUTH_ERRORS, 404, 422, 502),
)
def object_info(store: StoreDep, key: KeyDep) -> ObjectInfo:
    """What S3 knows about `key`; 404 when there is no such object."""
    info = _require(store, key)
    return ObjectInfo(
        key=info.key,
        size=info.size,
        content_type=info.content_type,
        etag=info.etag,
        last_modified=info.last_modified,
        version_id=info.version_id,
        metadata=info.metadata or {},
    )


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266), so `curl -OJ` saves it."""
    fallback = "".join(
        char if 32 <= ord(char) < 127 and char not in '"\\' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get(
    "/download",
    summary="Download an object's bytes",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The object's bytes, with its content type and a download filename",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **error_responses(*AUTH_ERRORS, 404, 422, 502),
    },
)
def download(store: StoreDep, key: KeyDep) -> StreamingResponse:
    """The object's bytes streamed in 1 MB chunks (never held whole in memory)."""
    info = _require(store, key)
    body = store.open(key)

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(MB)
        finally:
            body.close()

    return StreamingResponse(
        chunks(),
        media_type=info.content_type or "application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(key.rsplit("/", 1)[-1]),
            "Content-Length": str(info.size),
            "ETag": f'"{info.etag}"',
        },
    )


_WRITE = [Depends(require_write)]
UploadDep = Annotated[UploadFile, File(description="The bytes to store")]


@router.post(
    "/upload",
    status_code=201,
    response_model=WriteResult,
    dependencies=_WRITE,
    summary="Upload a new object (409 if the key exists)",
    responses=error_responses(*AUTH_ERRORS, 409, 413, 422, 502),
)
def upload(store: StoreDep, key: KeyDep, file: UploadDep) -> WriteResult:
    """Store the uploaded file at `key`; refuses to overwrite (use PUT /s3/update)."""
    if store.head(key) is not None:
        raise ApiError(409, f"object {key!r} exists; replace it with PUT /s3/update")
    return _written(_upload(store, key, file))


@router.put(
    "/update",
    response_model=WriteResult,
    dependencies=_WRITE,
    summary="Replace an existing object (404 if missing)",
    responses=error_responses(*AUTH_ERRORS, 404, 413, 422, 502),
)
def update(store: StoreDep, key: KeyDep, file: UploadDep) -> WriteResult:
    """Replace the object at `key` with the uploaded file."""
    _require(store, key)
    return _written(_upload(store, key, file))


@router.patch(
    "/patch",
    response_model=WriteResult,
    dependencies=_WRITE,
    summary="Write the uploaded bytes at an offset of an object",
    responses=error_responses(
        *AUTH_ERRORS, 404, 413, 416, 422, 502, e416="`offset` is past the end of the object"
    ),
)
def patch(
    store: StoreDep,
    api: ApiSettingsDep,
    key: KeyDep,
    file: UploadDep,
    offset: Annotated[int, Query(ge=0, description="Byte position to write at (0..size)")],
) -> WriteResult:
    """Overwrite the object's bytes from `offset` with the upload, extending it if needed.

    `offset` may equal the size (append); past it is 416. Large objects are rebuilt by a
    multipart copy of the untouched ranges, never loaded whole.
    """
    info = _require(store, key)
    if offset > info.size:
        raise ApiError(
            416,
            f"offset {offset} is past the end of {key!r} ({info.size} bytes); use 0..{info.size}",
            headers={"Content-Range": f"bytes */{info.size}"},
        )
    file.file.seek(0, 2)
    length = file.file.tell()
    file.file.seek(0)
    result = patch_object(
        store, key, offset, file.file, length, in_memory_limit=api.patch_copy_threshold_mb * MB
    )
    return _written(result)


@router.delete(
    "/delete",
    response_model=DeleteResult,
    dependencies=[Depends(require_write)],
    summary="Delete an object (404 if missing)",
    responses=error_responses(*AUTH_ERRORS, 404, 422, 502),
)
def delete(store: StoreDep, key: KeyDep) -> DeleteResult:
    """Delete the object at `key`."""
    if not store.delete(key):
        raise ApiError(404, f"no object {key!r} in bucket {store.bucket!r}")
    log.info("deleted s3 key %s", key)
    return DeleteResult(key=key, deleted=True)
