"""Test oracle: every event of an Amplitude archive as a dict (the pipeline reads raw lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dwh_helper.sources.amplitude_archive import iter_lines
from dwh_helper.sources.amplitude_errors import ArchiveError


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One event of an archive with the entry and line it came from."""

    entry: str
    line: int
    event: dict


def iter_events(archive_path: Path) -> Iterator[RawEvent]:
    """Every event of an archive as a dict, with its entry and line, in archive order.

    Raises `ArchiveError(entry=..., line=...)` on corrupt data or a line that is
    not a JSON object.
    """
    loads = json.loads
    for raw in iter_lines(archive_path):
        try:
            event = loads(raw.data)
        except ValueError as exc:
            raise ArchiveError(
                f"{archive_path}: entry {raw.entry!r} line {raw.line} is not valid JSON ({exc}): "
                f"{raw.data[:80]!r}",
                entry=raw.entry,
                line=raw.line,
            ) from exc
        if not isinstance(event, dict):
            raise ArchiveError(
                f"{archive_path}: entry {raw.entry!r} line {raw.line} is JSON but not an event "
                f"object (got {type(event).__name__})",
                entry=raw.entry,
                line=raw.line,
            )
        yield RawEvent(raw.entry, raw.line, event)
