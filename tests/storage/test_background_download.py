"""Reading an S3 object while it downloads gives exactly its bytes, and seeks back work."""

from __future__ import annotations

import os

import pytest

from dwh_helper.storage.background_download import BackgroundDownload
from dwh_helper.storage.s3 import ObjectNotFound, ObjectStore

pytestmark = pytest.mark.s3


def test_reads_the_object_while_it_arrives(store: ObjectStore, tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 123)
    store.client.put_object(Bucket=store.bucket, Key="raw/x.csv", Body=body)
    download = BackgroundDownload(store, "raw/x.csv", tmp_path / "x.csv").start()
    with download.open(buffer_size=64 * 1024) as reader:
        assert reader.name == "x.csv"
        head = reader.read(10)
        reader.seek(0)
        assert reader.read(10) == head
        assert head + reader.read() == body
        assert reader.read() == b""
    download.join()


def test_a_missing_object_raises_in_the_reader(store: ObjectStore, tmp_path):
    download = BackgroundDownload(store, "nope.csv", tmp_path / "nope.csv").start()
    with pytest.raises(ObjectNotFound), download.open() as reader:
        reader.read()
