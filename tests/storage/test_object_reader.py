"""Streaming an S3 object through `ObjectStore.open_reader` gives exactly its bytes."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import IncompleteReadError

from dwh_helper.storage.s3 import ObjectNotFound, ObjectReadError, ObjectStore, _BodyReader


@pytest.mark.s3
def test_reads_exactly_the_object_in_any_piece_sizes(store: ObjectStore):
    body = os.urandom(3 * 1024 * 1024 + 123)
    store.client.put_object(Bucket=store.bucket, Key="raw/x.csv", Body=body)
    with store.open_reader("raw/x.csv", buffer_size=64 * 1024) as reader:
        assert reader.name == "x.csv"
        pieces = [reader.read(10), reader.read(1 << 20), reader.read1(5000), reader.read()]
        assert b"".join(pieces) == body
        assert reader.read() == b""
    assert reader.closed


@pytest.mark.s3
def test_a_missing_object_is_object_not_found(store: ObjectStore):
    with pytest.raises(ObjectNotFound, match="nope.csv"):
        store.open_reader("nope.csv")


class _CutBody:
    """A StreamingBody whose connection drops after the first read."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, size: int) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise IncompleteReadError(actual_bytes=5, expected_bytes=100)
        return b"12345"

    def close(self) -> None:
        pass


@pytest.mark.unit
def test_a_transfer_cut_short_is_an_object_read_error_naming_the_object():
    raw = _BodyReader(_CutBody(), "x.csv", "s3://raw/x.csv")
    buffer = bytearray(8)
    assert raw.readinto(buffer) == 5
    with pytest.raises(ObjectReadError, match=r"reading s3://raw/x.csv failed after 5 bytes"):
        raw.readinto(buffer)
