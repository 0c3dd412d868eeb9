"""Write bytes at an offset into an S3 object without loading a large object whole.

A small object is read, spliced and written back. A large one is rebuilt by a
multipart upload: the untouched ranges are copied inside S3 (`UploadPartCopy`
with a byte range), and only the new bytes plus at most one part's worth of
neighbouring bytes (to satisfy S3's 5 MiB minimum part size) pass through
this process. Memory stays bounded by about two parts whatever the size.

No write is lost: callers serialise patches of one key with `KeyLocks`, may pass the ETag
they expect (`EtagMismatch` when the object has another), and the final write is conditional
on the ETag read at the start (`If-Match`), so a change made meanwhile by another process is
refused rather than overwritten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import ClientError

from dwh_helper.storage.s3 import MB, ObjectInfo, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

MIN_PART = 5 * MB
"""S3's smallest part (every part but the last)."""
MAX_COPY_PART = 5 * 1024 * MB
"""S3's largest part."""


class OffsetPastEnd(ValueError):
    """The offset lies beyond the object's end (a patch may start at most at the end)."""

    def __init__(self, key: str, offset: int, size: int) -> None:
        super().__init__(
            f"offset {offset} is past the end of {key!r} ({size} bytes); "
            f"use an offset between 0 and {size}"
        )
        self.key = key
        self.offset = offset
        self.size = size


class EtagMismatch(ValueError):
    """The object's ETag is not the one expected (it changed, or the caller had an old one)."""

    def __init__(self, key: str, expected: str, current: str | None) -> None:
        now = f"its ETag is now {current!r}" if current else "it changed while being written"
        super().__init__(
            f"{key!r} is not the version expected (If-Match {expected!r}); {now}. "
            "Read it again and retry with the new ETag"
        )
        self.key = key
        self.expected = expected
        self.current = current


def same_etag(expected: str, current: str) -> bool:
    """Whether an `If-Match` value names this ETag (`*`, quoted or not, weak or not)."""
    wanted = [item.strip() for item in expected.split(",")]
    bare = current.strip('"')
    return any(item == "*" or item.removeprefix("W/").strip('"') == bare for item in wanted)


class KeyLocks:
    """One lock per object key, so read-modify-writes of a key in this process take turns."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of `key` for the block (other keys are not blocked)."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def _is_precondition_failed(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412") or status == 412


@dataclass(frozen=True)
class _Copy:
    start: int
    end: int  # exclusive


@dataclass(frozen=True)
class _Data:
    stream: IO[bytes]
    length: int


def patch_object(
    store: ObjectStore,
    key: str,
    offset: int,
    data: IO[bytes],
    length: int,
    *,
    in_memory_limit: int = 16 * MB,
    part_size: int = 8 * MB,
    if_match: str | None = None,
) -> ObjectInfo:
    """Overwrite `length` bytes of `key` at `offset` with `data`, extending the object if needed.

    Raises `ObjectNotFound` when there is no object, `OffsetPastEnd` when `offset` > its size,
    `EtagMismatch` when `if_match` does not name its ETag or the object changed meanwhile.
    Content type and metadata are kept.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    info = store.head(key)
    if info is None:
        raise ObjectNotFound(f"no object s3://{store.bucket}/{key}")
    if if_match is not None and not same_etag(if_match, info.etag):
        raise EtagMismatch(key, if_match, info.etag)
    if offset > info.size:
        raise OffsetPastEnd(key, offset, info.size)
    started = time.monotonic()
    new_size = max(info.size, offset + length)
    if info.size + length <= in_memory_limit:
        result = _rewrite_in_memory(store, info, offset, data, length)
        how = "rewritten"
    else:
        segments: list[_Copy | _Data] = []
        if offset > 0:
            segments.append(_Copy(0, offset))
        if length > 0:
            segments.append(_Data(data, length))
        if offset + length < info.size:
            segments.append(_Copy(offset + length, info.size))
        result = _rebuild_by_multipart(store, info, segments, max(part_size, MIN_PART))
        how = "rebuilt by multipart copy"
    log.info(
        "patched s3://%s/%s: %d bytes at offset %d, %d -> %d bytes, %s in %.2fs",
        store.bucket,
        key,
        length,
        offset,
        info.size,
        new_size,
        how,
        time.monotonic() - started,
    )
    return result


def _extra_args(info: ObjectInfo) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if info.content_type:
        extra["ContentType"] = info.content_type
    if info.metadata:
        extra["Metadata"] = info.metadata
    return extra


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    chunks = []
    remaining = count
    while remaining > 0:
        chunk = stream.read(min(remaining, MB))
        if not chunk:
            raise ValueError(f"the patch data ended {remaining} bytes early (expected {count})")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _rewrite_in_memory(
    store: ObjectStore, info: ObjectInfo, offset: int, data: IO[bytes], length: int
) -> ObjectInfo:
    body = store.open(info.key).read() if info.size else b""
    patch = _read_exactly(data, length)
    content = body[:offset] + patch + body[offset + length :]
    try:
        store.client.put_object(
            Bucket=store.bucket,
            Key=info.key,
            Body=content,
            IfMatch=f'"{info.etag}"',
            **_extra_args(info),
        )
    except ClientError as error:
        if _is_precondition_failed(error):
            raise EtagMismatch(info.key, info.etag, None) from None
        raise
    return _after_write(store, info.key)


def _after_write(store: ObjectStore, key: str) -> ObjectInfo:
    written = store.head(key)
    if written is None:
        raise ObjectNotFound(f"s3://{store.bucket}/{key} is missing right after it was patched")
    return written


def _copy_pieces(start: int, end: int) -> Iterator[tuple[int, int]]:
    """Split [start, end) into pieces of at most MAX_COPY_PART, each at least MIN_PART."""
    total = end - start
    count = max(1, -(-total // MAX_COPY_PART))
    size = -(-total // count)
    position = start
    while position < end:
        stop = min(end, position + size)
        yield position, stop
        position = stop


def _rebuild_by_multipart(
    store: ObjectStore, info: ObjectInfo, segments: list[_Copy | _Data], part_size: int
) -> ObjectInfo:
    client, bucket, key = store.client, store.bucket, info.key
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **_extra_args(info))
    upload_id = upload["UploadId"]
    parts: list[dict[str, Any]] = []
    pending = bytearray()
    copied = 0

    def emit_bytes() -> None:
        number = len(parts) + 1
        response = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(pending)
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
        pending.clear()

    def emit_copy(start: int, end: int) -> None:
        nonlocal copied
        number = len(parts) + 1
        response = client.upload_part_copy(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": key},
            CopySourceRange=f"bytes={start}-{end - 1}",
            CopySourceIfMatch=f'"{info.etag}"',
        )
        parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
        copied += end - start

    def read_range(start: int, end: int) -> bytes:
        return store.open(key, byte_range=f"bytes={start}-{end - 1}").read()

    try:
        for segment in segments:
            if isinstance(segment, _Data):
                remaining = segment.length
                while remaining > 0:
                    if len(pending) >= part_size:
                        emit_bytes()
                    chunk = segment.stream.read(min(remaining, part_size - len(pending), MB))
                    if not chunk:
                        raise ValueError(f"the patch data ended {remaining} bytes early")
                    pending.extend(chunk)
                    remaining -= len(chunk)
                    if len(pending) >= part_size:
                        emit_bytes()
                continue
            start, end = segment.start, segment.end
            if pending and len(pending) < MIN_PART:
                fill = min(end, start + MIN_PART - len(pending))
                pending.extend(read_range(start, fill))
                start = fill
            if start >= end:
                continue
            if pending:
                emit_bytes()
            if end - start >= MIN_PART:
                for piece_start, piece_end in _copy_pieces(start, end):
                    emit_copy(piece_start, piece_end)
            else:
                pending.extend(read_range(start, end))
        if pending or not parts:
            emit_bytes()
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            IfMatch=f'"{info.etag}"',
        )
    except ClientError as error:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        if _is_precondition_failed(error):
            raise EtagMismatch(key, info.etag, None) from None
        raise
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    log.debug("multipart patch of %s: %d parts, %d bytes copied in S3", key, len(parts), copied)
    return _after_write(store, key)
