"""ObjectStore against moto's S3 server."""

from __future__ import annotations

import hashlib
import os

import pytest

from dwh_helper.storage.s3 import ObjectNotFound, ObjectStore, file_sha256

pytestmark = pytest.mark.s3


def test_upload_with_metadata_head_download(store: ObjectStore, tmp_path):
    source = tmp_path / "a.zip"
    source.write_bytes(b"PK\x03\x04 raw bytes")
    info = store.upload_file(
        source, "raw/x/a.zip", metadata={"window": "20240302T00-23"}, content_type="application/zip"
    )
    assert info.size == source.stat().st_size
    head = store.head("raw/x/a.zip")
    assert head is not None
    assert head.metadata == {"window": "20240302T00-23"}
    assert head.content_type == "application/zip"
    target = store.download_file("raw/x/a.zip", tmp_path / "b.zip")
    assert target.read_bytes() == source.read_bytes()
    assert store.open("raw/x/a.zip").read() == source.read_bytes()
    assert store.open("raw/x/a.zip", byte_range="bytes=0-1").read() == b"PK"


def test_large_object_goes_multipart_and_round_trips(store: ObjectStore, tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(13):
            handle.write(os.urandom(1024 * 1024))
    info = store.upload_file(source, "raw/big.bin")
    assert info.size == 13 * 1024 * 1024
    assert "-" in info.etag, "a multipart upload has an etag of the form <md5>-<parts>"
    target = store.download_file("raw/big.bin", tmp_path / "copy.bin")
    assert file_sha256(target) == file_sha256(source)
    streamed = hashlib.sha256()
    for chunk in store.open("raw/big.bin").iter_chunks(1024 * 1024):
        streamed.update(chunk)
    assert streamed.hexdigest() == file_sha256(source)


def test_list_direct_children_across_pages(store: ObjectStore):
    for i in range(1005):
        store.client.put_object(Bucket=store.bucket, Key=f"p/{i:04d}.json", Body=b"{}")
    store.client.put_object(Bucket=store.bucket, Key="p/sub/one.json", Body=b"{}")
    store.client.put_object(Bucket=store.bucket, Key="other.json", Body=b"{}")
    listing = store.list("p/")
    assert len(listing.objects) == 1005
    assert listing.folders == ["p/sub/"]
    assert sum(1 for _ in store.iter_objects("p/")) == 1006


def test_missing_objects(store: ObjectStore, tmp_path):
    assert store.head("nope") is None
    with pytest.raises(ObjectNotFound, match="nope"):
        store.open("nope")
    with pytest.raises(ObjectNotFound):
        store.download_file("nope", tmp_path / "x")
    assert store.delete("nope") is False


def test_delete(store: ObjectStore):
    store.client.put_object(Bucket=store.bucket, Key="k", Body=b"1")
    assert store.delete("k") is True
    assert store.head("k") is None
