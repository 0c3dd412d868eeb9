"""`patch_object` on moto's S3: small objects in memory, large ones by multipart copy."""

from __future__ import annotations

import io
import os

import pytest

from dwh_helper.storage.patch import MIN_PART, OffsetPastEnd, patch_object
from dwh_helper.storage.s3 import MB, ObjectNotFound

pytestmark = pytest.mark.s3

BIG = os.urandom(12 * MB + 123)


def _splice(original: bytes, offset: int, patch: bytes) -> bytes:
    return original[:offset] + patch + original[offset + len(patch) :]


def _put(store, key: str, body: bytes) -> None:
    store.client.put_object(
        Bucket=store.bucket, Key=key, Body=body, ContentType="text/csv", Metadata={"source": "t"}
    )


@pytest.mark.parametrize(
    ("offset", "patch_size"),
    [
        (0, 10),  # head, tiny patch: merged with the start of the tail
        (100, 6 * MB),  # small head + large patch
        (6 * MB, 1000),  # middle: copy, bytes, copy
        (len(BIG) - 5, 10),  # crosses the end: extends
        (len(BIG), 3 * MB),  # appended at the end
        (MIN_PART - 1, 2),  # head just under a part
        (MIN_PART, 0),  # empty patch: unchanged
    ],
)
def test_large_object_patched_by_multipart_copy(store, offset, patch_size):
    _put(store, "big.bin", BIG)
    patch = os.urandom(patch_size)
    info = patch_object(store, "big.bin", offset, io.BytesIO(patch), len(patch), in_memory_limit=MB)
    expected = _splice(BIG, offset, patch)
    assert info.size == len(expected)
    assert store.open("big.bin").read() == expected
    assert info.content_type == "text/csv"
    assert info.metadata == {"source": "t"}


@pytest.mark.parametrize("offset", [0, 3, 10])
def test_small_object_rewritten_in_memory(store, offset):
    _put(store, "small.txt", b"0123456789")
    info = patch_object(store, "small.txt", offset, io.BytesIO(b"ab"), 2)
    assert store.open("small.txt").read() == _splice(b"0123456789", offset, b"ab")
    assert info.size == max(10, offset + 2)
    assert info.content_type == "text/csv"


def test_offset_past_end_and_missing_object(store):
    _put(store, "small.txt", b"0123456789")
    with pytest.raises(OffsetPastEnd, match="between 0 and 10"):
        patch_object(store, "small.txt", 11, io.BytesIO(b"x"), 1)
    with pytest.raises(ObjectNotFound):
        patch_object(store, "nothing.txt", 0, io.BytesIO(b"x"), 1)
    assert store.open("small.txt").read() == b"0123456789"


def test_short_patch_data_leaves_the_object_untouched(store):
    _put(store, "big.bin", BIG)
    with pytest.raises(ValueError, match="early"):
        patch_object(store, "big.bin", 10, io.BytesIO(b"abc"), 6 * MB, in_memory_limit=MB)
    assert store.open("big.bin").read() == BIG
