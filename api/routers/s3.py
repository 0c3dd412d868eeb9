"""`/s3`: list, inspect, download, upload, replace, patch and delete objects of the bucket."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Header, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.byte_ranges import content_disposition, parse_range
from api.deps import ApiSettingsDep, LocksDep, StoreDep, require_read, require_write
from api.errors import AUTH_ERRORS, ApiError, error_responses
from api.object_keys import valid_key, valid_prefix
from dwh_helper.storage.patch import EtagMismatch, OffsetPastEnd, patch_object, same_etag
from dwh_helper.storage.s3 import MB, ObjectNotFound
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
    count: int = Field(description="Number of objects on this page (folders not counted)")
    next_continuation: str | None = Field(
        None, description="Pass as `continuation` to read the next page; null on the last"
    )
    next: str | None = Field(None, description="URL of the next page; null on the last")


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


KeyDep = Annotated[str, Depends(valid_key)]


def _written(info: StoredInfo) -> WriteResult:
    return WriteResult(key=info.key, etag=info.etag, version_id=info.version_id, size=info.size)


def _require(store: Any, key: str) -> StoredInfo:
    info = store.head(key)
    if info is None:
        raise ApiError(404, f"no object {key!r} in bucket {store.bucket!r}", field="key")
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
    name="list_s3_objects",
    summary="List objects and folders directly under a prefix, a page at a time",
    responses=error_responses(*AUTH_ERRORS, 422, 502),
)
def list_objects(
    request: Request,
    store: StoreDep,
    prefix: Annotated[str, Depends(valid_prefix)],
    limit: Annotated[
        int, Query(ge=1, le=1000, description="Objects and folders per page (S3 gives 1,000)")
    ] = 1000,
    continuation: Annotated[
        str | None,
        Query(
            max_length=1024,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="List what comes after this key: `next_continuation` of the previous "
            "page (keyset continuation)",
        ),
    ] = None,
) -> ObjectList:
    """Direct children of `prefix`, at most `limit`; follow `next` for the rest."""
    listing = store.list_page(prefix, limit, continuation or "")
    objects = [
        ObjectEntry(key=item.key, size=item.size, etag=item.etag, last_modified=item.last_modified)
        for item in listing.objects
    ]
    following = None
    token = listing.next_token
    if token:
        following = str(request.url.include_query_params(continuation=token, limit=limit))
    return ObjectList(
        prefix=prefix,
        objects=objects,
        folders=listing.folders,
        count=len(objects),
        next_continuation=token,
        next=following,
    )


@router.get(
    "/object-info",
    response_model=ObjectInfo,
    name="read_s3_object_info",
    summary="Size, content type, ETag and last modified of one object",
    responses=error_responses(*AUTH_ERRORS, 404, 422, 502),
)
def object_info(store: StoreDep, key: KeyDep) -> ObjectInfo:
    """What S3 knows about `key`; 404 when there is no such object."""
    info = _require(store, key)
    return ObjectInfo(**(asdict(info) | {"metadata": info.metadata or {}}))


RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        max_length=200,
        description="One byte range, e.g. `bytes=0-1023`, `bytes=1024-` or `bytes=-500` (206)",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=1000,
        description="ETag(s) you have; 304 when the object still has one of them",
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=1000,
        description="The ETag the object must still have (else 412); `*`: any existing object",
    ),
]


def _download_responses(ok: str, partial: str, not_modified: str) -> dict[int | str, Any]:
    """The answers of a download (GET) or of its headers (HEAD): same statuses, own wording."""

    def binary(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }

    return {
        200: binary(ok),
        206: binary(partial),
        304: {"description": not_modified},
        **error_responses(
            *AUTH_ERRORS, 404, 416, 422, 502, e416="`Range` starts past the end of the object"
        ),
    }


def _download(
    store: Any, key: str, range_header: str | None, if_none_match: str | None, *, body: bool
) -> Response:
    info = _require(store, key)
    etag = f'"{info.etag}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(key.rsplit("/", 1)[-1]),
    }
    if info.last_modified is not None:
        modified = info.last_modified.astimezone(UTC)
        headers["Last-Modified"] = format_datetime(modified, usegmt=True)
    if if_none_match and same_etag(if_none_match, info.etag):
        return Response(status_code=304, headers={"ETag": etag})
    chosen = parse_range(range_header, info.size)
    status, byte_range = 200, None
    length = info.size
    if chosen is not None:
        start, end = chosen
        status, byte_range, length = 206, f"bytes={start}-{end}", end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(length)
    media_type = info.content_type or "application/octet-stream"
    if not body:
        return Response(status_code=status, headers=headers, media_type=media_type)
    stream = store.open(key, byte_range=byte_range) if length else None

    def chunks() -> Iterator[bytes]:
        if stream is None:
            return
        try:
            yield from stream.iter_chunks(MB)
        finally:
            stream.close()

    return StreamingResponse(chunks(), status_code=status, media_type=media_type, headers=headers)


@router.get(
    "/download",
    name="download_s3_object",
    summary="Download an object's bytes (whole, or one `Range`)",
    response_class=StreamingResponse,
    responses=_download_responses(
        "The object's bytes, with its content type and a download filename",
        "The requested byte range (`Content-Range`)",
        "Not modified: the object still has an ETag of `If-None-Match`",
    ),
)
def download(
    store: StoreDep,
    key: KeyDep,
    range_header: RangeHeader = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The object's bytes streamed in 1 MB chunks (never held whole in memory); `Range` gives
    206 with one range, `If-None-Match` with the current ETag gives 304."""
    return _download(store, key, range_header, if_none_match, body=True)


@router.head(
    "/download",
    name="head_s3_object",
    summary="The headers of a download, without the bytes",
    responses=_download_responses(
        "Headers only: Content-Length, ETag, Content-Type, Accept-Ranges",
        "Headers only, for the requested range",
        "Not modified",
    ),
)
def download_head(
    store: StoreDep,
    key: KeyDep,
    range_header: RangeHeader = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """What GET /s3/download would send, headers only."""
    return _download(store, key, range_header, if_none_match, body=False)


_WRITE = [Depends(require_write)]
UploadDep = Annotated[UploadFile, File(description="The bytes to store")]


def _check_if_match(if_match: str | None, key: str, info: StoredInfo | None) -> None:
    if if_match is None:
        return
    if info is None:
        raise ApiError(412, f"If-Match given but there is no object {key!r}", field="If-Match")
    if not same_etag(if_match, info.etag):
        raise ApiError(
            412,
            f"{key!r} has ETag {info.etag!r}, not {if_match[:80]!r}: it changed since you read "
            "it; read it again and retry with the new ETag",
            field="If-Match",
        )


def _answer(result: StoredInfo, response: Response) -> WriteResult:
    response.headers["ETag"] = f'"{result.etag}"'
    return _written(result)


@router.post(
    "/upload",
    status_code=201,
    response_model=WriteResult,
    dependencies=_WRITE,
    name="upload_s3_object",
    summary="Upload a new object (409 if the key exists)",
    responses=error_responses(*AUTH_ERRORS, 409, 412, 413, 422, 502),
)
def upload(
    store: StoreDep,
    locks: LocksDep,
    key: KeyDep,
    file: UploadDep,
    response: Response,
    if_match: IfMatch = None,
) -> WriteResult:
    """Store the uploaded file at `key`; refuses to overwrite (use PUT /s3/update)."""
    with locks.hold(key):
        existing = store.head(key)
        _check_if_match(if_match, key, existing)
        if existing is not None:
            raise ApiError(
                409, f"object {key!r} exists; replace it with PUT /s3/update", field="key"
            )
        return _answer(_upload(store, key, file), response)


@router.put(
    "/update",
    response_model=WriteResult,
    dependencies=_WRITE,
    name="replace_s3_object",
    summary="Replace an existing object (404 if missing, 412 if `If-Match` is stale)",
    responses=error_responses(*AUTH_ERRORS, 404, 412, 413, 422, 502),
)
def update(
    store: StoreDep,
    locks: LocksDep,
    key: KeyDep,
    file: UploadDep,
    response: Response,
    if_match: IfMatch = None,
) -> WriteResult:
    """Replace the object at `key` with the uploaded file."""
    with locks.hold(key):
        _check_if_match(if_match, key, _require(store, key))
        return _answer(_upload(store, key, file), response)


@router.patch(
    "/patch",
    response_model=WriteResult,
    dependencies=_WRITE,
    name="patch_s3_object",
    summary="Write the uploaded bytes at an offset of an object",
    responses=error_responses(
        *AUTH_ERRORS, 404, 412, 413, 416, 422, 502, e416="`offset` is past the end of the object"
    ),
)
def patch(
    store: StoreDep,
    api: ApiSettingsDep,
    locks: LocksDep,
    key: KeyDep,
    file: UploadDep,
    offset: Annotated[
        int, Query(ge=0, le=2**53, description="Byte position to write at (0..size)")
    ],
    response: Response,
    if_match: IfMatch = None,
) -> WriteResult:
    """Overwrite the object's bytes from `offset` with the upload, extending it if needed.

    `offset` may equal the size (append); past it is 416. Patches of one key take turns, and
    the write is conditional on the ETag read first, so no acknowledged patch is lost; with
    `If-Match` a stale ETag is 412. Large objects are rebuilt by a multipart copy of the
    untouched ranges, never loaded whole.
    """
    file.file.seek(0, 2)
    length = file.file.tell()
    file.file.seek(0)
    with locks.hold(key):
        try:
            result = patch_object(
                store,
                key,
                offset,
                file.file,
                length,
                in_memory_limit=api.patch_copy_threshold_mb * MB,
                if_match=if_match,
            )
        except ObjectNotFound:
            raise ApiError(
                404, f"no object {key!r} in bucket {store.bucket!r}", field="key"
            ) from None
        except EtagMismatch as exc:
            raise ApiError(412, str(exc), field="If-Match") from None
        except OffsetPastEnd as exc:
            raise ApiError(
                416, str(exc), field="offset", headers={"Content-Range": f"bytes */{exc.size}"}
            ) from None
    return _answer(result, response)


@router.delete(
    "/delete",
    response_model=DeleteResult,
    dependencies=_WRITE,
    name="delete_s3_object",
    summary="Delete an object (404 if missing)",
    responses=error_responses(*AUTH_ERRORS, 404, 412, 422, 502),
)
def delete(store: StoreDep, locks: LocksDep, key: KeyDep, if_match: IfMatch = None) -> DeleteResult:
    """Delete the object at `key`."""
    with locks.hold(key):
        existing = store.head(key)
        _check_if_match(if_match, key, existing)
        if existing is None or not store.delete(key):
            raise ApiError(404, f"no object {key!r} in bucket {store.bucket!r}", field="key")
    log.info("deleted s3 key %s", key)
    return DeleteResult(key=key, deleted=True)
