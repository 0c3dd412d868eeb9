"""Lines of a raw event file on disk: an Amplitude export ZIP (entry by entry) or an NDJSON
file (optionally gzip), numbered from 1 across the whole file, streamed."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dwh_helper.sources.amplitude_archive import iter_lines


@dataclass(frozen=True)
class EventLine:
    """One non-empty line: its number in the file, its ZIP entry and line there (if any)."""

    index: int
    entry: str | None
    entry_line: int | None
    data: bytes


class LinesUnreadable(Exception):
    """The file could not be read past a line: `index` is the first line not read, `cause`
    the error."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause


def iter_event_lines(path: Path) -> Iterator[EventLine]:
    """Non-empty lines of a ZIP archive (entry by entry) or an NDJSON file, numbered from 1;
    `LinesUnreadable` when the file breaks off or is corrupt."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    index = 0
    try:
        if magic[:2] == b"PK":
            for raw in iter_lines(path):
                index += 1
                yield EventLine(index, raw.entry, raw.line, raw.data)
            return
        opener = gzip.open if magic[:2] == b"\x1f\x8b" else open
        with opener(path, "rb") as lines:
            for number, data in enumerate(lines, start=1):
                data = data.strip()
                if data:
                    index += 1
                    yield EventLine(index, None, number, data)
    except Exception as exc:
        raise LinesUnreadable(index + 1, exc) from exc
