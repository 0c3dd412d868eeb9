"""Streaming an S3 object through `ObjectStore.open_reader` gives exactly its bytes."""

from __future__ import annotations

import os

import pytest

from dwh_helper.storage.s3 import ObjectNotFound, ObjectStore

pytestmark = pytest.mark.s3


def test_reads_exactly_the_object_in_any_piece_sizes(store: ObjectStore):
    body = os.urandom(3 * 1024 * 1024 + 123)
    store.client.put_object(Bucket=store.bucket, Key="raw/x.csv", Body=body)
    with store.open_reader("raw/x.csv", buffer_size=64 * 1024) as reader:
        assert reader.name == "x.csv"
        pieces = [reader.read(10), reader.read(1 << 20), reader.read1(5000), reader.read()]
        assert b"".join(pieces) == body
        assert reader.read() == b""
    assert reader.closed


def test_a_missing_object_is_object_not_found(store: ObjectStore):
    with pytest.raises(ObjectNotFound, match="nope.csv"):
        store.open_reader("nope.csv")
