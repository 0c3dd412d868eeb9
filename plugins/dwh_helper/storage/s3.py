"""Object operations on the raw-file bucket, over a boto3 S3 client.

The client comes from settings (`build_s3_client`) or, on Airflow, from
`S3Hook.get_conn()`. Uploads stream from a file (multipart above a
threshold); downloads go to a file or come back as a stream.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from dwh_helper.config import S3Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024
LAST_CHARACTER = "\U0010ffff"
"""Sorts after every character of a key (S3 orders keys by their UTF-8 bytes)."""


class ObjectNotFound(KeyError):
    """No object at this key."""


class ObjectReadError(OSError):
    """Streaming an object failed part-way (connection dropped, body cut short); names the
    object and how far it got. Reading it again from the start may succeed."""


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 knows about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    content_type: str | None = None
    metadata: dict[str, str] | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class Listing:
    """Direct children under a prefix: objects and "folders" (common prefixes); `next_token`
    continues a listing cut at a page's end (None when it is complete)."""

    objects: list[ObjectInfo]
    folders: list[str]
    next_token: str | None = None


def build_s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client from the `S3_*` settings."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=(
            settings.access_key_id.get_secret_value() if settings.access_key_id else None
        ),
        aws_secret_access_key=(
            settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
        ),
    )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_missing(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


class ObjectStore:
    """One bucket: upload, download, list, head, delete."""

    def __init__(self, client: Any, bucket: str, multipart_threshold: int = 64 * MB) -> None:
        self.client = client
        self.bucket = bucket
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold // 4, 5 * MB),
        )

    def upload_file(
        self,
        path: Path | str,
        key: str,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Stream a local file to `key` (multipart above the threshold); overwrites."""
        extra: dict[str, Any] = {}
        if metadata:
            extra["Metadata"] = {name: str(value) for name, value in metadata.items()}
        if content_type:
            extra["ContentType"] = content_type
        self.client.upload_file(
            str(path), self.bucket, key, ExtraArgs=extra or None, Config=self.transfer
        )
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(f"s3://{self.bucket}/{key} is missing right after its upload")
        log.info("uploaded s3://%s/%s (%d bytes)", self.bucket, key, info.size)
        return info

    def upload_stream(self, stream: IO[bytes], key: str, content_type: str | None = None) -> None:
        """Stream a file-like object to `key` (multipart above the threshold); overwrites."""
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_fileobj(stream, self.bucket, key, ExtraArgs=extra, Config=self.transfer)

    def download_file(self, key: str, path: Path | str) -> Path:
        """Download `key` to a local file, streamed; raises ObjectNotFound."""
        try:
            self.client.download_file(self.bucket, key, str(path), Config=self.transfer)
        except ClientError as error:
            if _is_missing(error):
                raise ObjectNotFound(f"no object s3://{self.bucket}/{key}") from None
            raise
        return Path(path)

    def open(self, key: str, byte_range: str | None = None) -> Any:
        """The object's body as a stream (botocore StreamingBody); raises ObjectNotFound."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            return self.client.get_object(**kwargs)["Body"]
        except ClientError as error:
            if _is_missing(error):
                raise ObjectNotFound(f"no object s3://{self.bucket}/{key}") from None
            raise

    def open_reader(self, key: str, buffer_size: int = MB) -> BinaryIO:
        """A buffered binary reader over the object, read from the network as it is consumed.

        Nothing touches the disk and memory stays one buffer; `name` is the key's file
        name. Raises ObjectNotFound; a transfer cut short raises when the reader gets there.
        """
        body = _BodyReader(self.open(key), Path(key).name, f"s3://{self.bucket}/{key}")
        reader = io.BufferedReader(body, buffer_size)
        return reader  # type: ignore[return-value]

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None when there is none at `key`."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=response.get("ETag", "").strip('"'),
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType"),
            metadata=response.get("Metadata") or {},
            version_id=response.get("VersionId"),
        )

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under a prefix, recursively, page by page."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield _info(item)

    def list(self, prefix: str = "") -> Listing:
        """Direct children of a prefix ("folder" semantics with `/`), across all pages."""
        objects: list[ObjectInfo] = []
        folders: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            objects.extend(_info(item) for item in page.get("Contents", []))
            folders.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return Listing(objects, folders)

    def list_page(self, prefix: str = "", limit: int = 1000, start_after: str = "") -> Listing:
        """At most `limit` direct children of a prefix (objects and folders together), those
        after `start_after` (keyset); `next_token` is the `start_after` of the next page."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "Delimiter": "/",
            "MaxKeys": limit,
        }
        if start_after:
            kwargs["StartAfter"] = start_after
        page = self.client.list_objects_v2(**kwargs)
        objects = [_info(item) for item in page.get("Contents", [])]
        folders = [item["Prefix"] for item in page.get("CommonPrefixes", [])]
        following = None
        if page.get("IsTruncated") and (objects or folders):
            last_key = objects[-1].key if objects else ""
            last_folder = folders[-1] if folders else ""
            # after a folder, skip every key inside it: U+10FFFF sorts after any character
            following = max(last_key, last_folder + LAST_CHARACTER if last_folder else "")
        return Listing(objects, folders, following)

    def delete(self, key: str) -> bool:
        """Delete `key`; returns False when there was nothing there."""
        if self.head(key) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return True


class _BodyReader(io.RawIOBase):
    """The raw side of `ObjectStore.open_reader`: a botocore StreamingBody as a raw stream."""

    def __init__(self, body: Any, name: str, url: str = "") -> None:
        self._body = body
        self.name = name
        self._url = url or name
        self._done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, OSError) as exc:
            raise ObjectReadError(
                f"reading {self._url} failed after {self._done} bytes: {exc}"
            ) from exc
        buffer[: len(data)] = data
        self._done += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _info(item: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=item["Key"],
        size=item["Size"],
        etag=item.get("ETag", "").strip('"'),
        last_modified=item.get("LastModified"),
    )


def store_from_settings(settings: S3Settings) -> ObjectStore:
    """An ObjectStore for `S3_BUCKET_NAME` with a client from the `S3_*` settings."""
    return ObjectStore(
        build_s3_client(settings),
        settings.require_bucket(),
        multipart_threshold=settings.multipart_threshold_mb * MB,
    )
