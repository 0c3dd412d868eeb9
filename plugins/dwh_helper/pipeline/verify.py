"""Raw objects checked against what `extract` recorded: size before reading, SHA-256 while
streaming (no extra pass over the data)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, BinaryIO

from dwh_helper.storage.s3 import MB, ObjectInfo


class ObjectMismatch(Exception):
    """The object in S3 is not the one `extract` landed (its size or SHA-256 differ)."""


@dataclass(frozen=True)
class Expected:
    """Size and SHA-256 recorded in the object's metadata by `extract` (None: not recorded)."""

    size: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, info: ObjectInfo | None) -> Expected:
        """What the object's metadata says it should be."""
        metadata = (info.metadata if info is not None else None) or {}
        size = metadata.get("size")
        sha = metadata.get("sha256")
        return cls(int(size) if size and size.isdigit() else None, sha.lower() if sha else None)

    @property
    def recorded(self) -> bool:
        """True when extract recorded both size and SHA-256."""
        return self.size is not None and self.sha256 is not None


def check_size(expected: Expected, size: int) -> None:
    """Before reading: the object's size against the recorded one."""
    if expected.size is not None and size != expected.size:
        raise ObjectMismatch(
            f"object is {size} bytes but extract recorded {expected.size} bytes "
            "(truncated or replaced after extract); nothing loaded — re-extract the day"
        )


def check_digest(expected: Expected, size: int, sha256: str) -> None:
    """After reading: bytes read and their SHA-256 against the recorded ones."""
    check_size(expected, size)
    if expected.sha256 is not None and sha256 != expected.sha256:
        raise ObjectMismatch(
            f"SHA-256 of the object is {sha256} but extract recorded {expected.sha256}; "
            "nothing loaded — re-extract the day"
        )


class HashingReader(io.RawIOBase):
    """A raw stream over another binary stream that hashes and counts what passes through.

    Closing it (as parsers do when they finish) leaves the inner stream open; `finish()`
    reads what the parser left unread (a trailing newline), closes the inner stream and
    returns (bytes, SHA-256 hex).
    """

    def __init__(self, inner: BinaryIO, name: str = "") -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.name = name or getattr(inner, "name", "")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self._hash.update(data)
        self.bytes += size
        return size

    def finish(self) -> tuple[int, str]:
        """Read the rest of the inner stream into the hash; (bytes, SHA-256 hex)."""
        while chunk := self._inner.read(MB):
            self._hash.update(chunk)
            self.bytes += len(chunk)
        self._inner.close()
        return self.bytes, self._hash.hexdigest()

    def buffered(self) -> BinaryIO:
        """This stream behind a 1 MB buffer (what parsers read best)."""
        return io.BufferedReader(self, MB)  # type: ignore[return-value]


def copy_hashing(source: BinaryIO, target: BinaryIO) -> tuple[int, str]:
    """Copy a stream to a file, hashing it on the way; (bytes, SHA-256 hex)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(MB):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
