"""Amplitude export archives on disk: entries in (day, hour, part) order, lines streamed.

`iter_lines` reads a downloaded archive entry by entry, decompressing each
gzip entry as a stream (memory stays flat whatever the entry's size);
`zip_problem` tells a complete archive from a truncated or foreign body. Gzip entries are
inflated with ISA-L (`isal`, zlib's API at about twice zlib's speed: inflating is a tenth of
the reader's time; docs/benchmarks.md).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isal import isal_zlib

from dwh_helper.sources.amplitude_errors import ArchiveError

_CHUNK = 1024 * 1024
_READ_CHUNK = 256 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_ENTRY_NAME = re.compile(r"(?:^|/)(?:\d+_)?(\d{4}-\d{2}-\d{2})_(\d{1,2})#(\d+)\.json(?:\.gz)?$")


@dataclass(frozen=True, slots=True)
class RawLine:
    """One non-empty line of an archive entry (without its line break); lines count from 1."""

    entry: str
    line: int
    data: bytes


def _entry_sort_key(name: str) -> tuple:
    match = _ENTRY_NAME.search(name)
    if match is None:
        return (1, "", 0, 0, name)
    day, hour, part = match.groups()
    return (0, day, int(hour), int(part), name)


def _open_archive(archive_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(
            f"{archive_path}: not a readable ZIP archive ({exc}); re-export the window"
        ) from exc


def _sorted_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = [info for info in archive.infolist() if not info.is_dir()]
    return sorted(infos, key=lambda info: _entry_sort_key(info.filename))


def archive_entries(archive_path: Path) -> list[str]:
    """Entry names of an export archive in (day, hour, part) order."""
    with _open_archive(archive_path) as archive:
        return [info.filename for info in _sorted_entries(archive)]


def iter_lines(archive_path: Path) -> Iterator[RawLine]:
    """Every non-empty line of every entry, entry by entry in (day, hour, part) order, streamed.

    Gzip entries (`*.gz`) are decompressed on the fly in 1 MB chunks; nothing
    holds a whole entry in memory. Raises `ArchiveError` naming the entry and
    line where the data went bad.
    """
    with _open_archive(archive_path) as archive:
        for info in _sorted_entries(archive):
            yield from _iter_entry_lines(archive_path, archive, info)


def _iter_entry_lines(
    archive_path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> Iterator[RawLine]:
    entry = info.filename
    gzipped = entry.endswith(".gz")
    number = 0  # lines completed so far
    pending = b""
    try:
        with archive.open(info) as raw:
            chunks = _gunzip_chunks(raw) if gzipped else iter(lambda: raw.read(_CHUNK), b"")
            for chunk in chunks:
                lines = chunk.split(b"\n")
                if pending:
                    lines[0] = pending + lines[0]
                pending = lines.pop()
                for data in lines:
                    number += 1
                    data = data.rstrip()
                    if data:
                        yield RawLine(entry, number, data)
    except (zipfile.BadZipFile, isal_zlib.error, EOFError, OSError, _TruncatedGzip) as exc:
        raise ArchiveError(
            f"{archive_path}: entry {entry!r} is corrupt at line {number + 1} ({exc}); "
            "re-export the window",
            entry=entry,
            line=number + 1,
        ) from exc
    data = pending.rstrip()
    if data:
        yield RawLine(entry, number + 1, data)


class _TruncatedGzip(Exception):
    """The gzip stream ended before its trailer (internal)."""


def _gunzip_chunks(raw: io.BufferedIOBase) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream chunk by chunk."""
    decompressor = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
    seen_member = False
    while True:
        compressed = raw.read(_READ_CHUNK)
        if not compressed:
            break
        while compressed:
            seen_member = True
            # bounded output: highly compressible data must not inflate into one huge block
            out = decompressor.decompress(compressed, _CHUNK)
            if out:
                yield out
            if decompressor.eof:
                compressed = decompressor.unused_data.lstrip(b"\x00")
                decompressor = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
                seen_member = False
            else:
                compressed = decompressor.unconsumed_tail
    tail = decompressor.flush()
    if tail:
        yield tail
    if seen_member and not decompressor.eof:
        raise _TruncatedGzip("the gzip stream ends before its end marker (truncated)")


def zip_problem(path: Path, size: int) -> str | None:
    """Why the file is not a complete ZIP ("empty" for a ZIP without entries), else None."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == _EMPTY_ZIP_MAGIC:
        return "empty"
    if magic != _ZIP_MAGIC:
        return f"the body is not a ZIP archive (starts with {magic!r}, {size} bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            for info in entries:
                if info.header_offset + info.compress_size > size:
                    return f"entry {info.filename!r} runs past the end of the body (truncated)"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"the ZIP is truncated or corrupt ({exc}, {size} bytes)"
    if not entries:
        return "empty"
    return None
