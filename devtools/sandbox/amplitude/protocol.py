"""The Amplitude Export API's wire format without sockets: the archive, auth, messages.

A 200 carries a ZIP of `{project_id}/{project_id}_{YYYY-MM-DD}_{H}#{n}.json.gz` entries,
each a gzip of NDJSON lines; the keys come as HTTP Basic `api_key:secret_key`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any

#: Events per archive entry in the sandbox (busy hours get several `#n` parts).
DEFAULT_EVENTS_PER_PART = 50
#: gzip level of generated entries: fast, and the loader's cost does not depend on it.
GZIP_LEVEL = 1
_WRITE_BATCH = 1000
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

TOO_LARGE_MESSAGE = (
    "Raw data files exceed the 4GB limit for a single export. Please narrow the time range."
)
NOT_FOUND_MESSAGE = "Raw data files were not found."
NON_ZIP_PAGE = (
    b"<!DOCTYPE html><html><head><title>Too Many Requests</title></head>"
    b"<body><h1>Please slow down</h1><p>Edge rate limit page.</p></body></html>"
)


@dataclass(frozen=True)
class SandboxProject:
    """One Amplitude project: its name (`web`/`mobile`), key pair and numeric id."""

    name: str
    api_key: str
    secret_key: str
    project_id: int


DEFAULT_PROJECTS = (
    SandboxProject("web", "sandbox-web-api-key", "sandbox-web-secret-key", 374182),
    SandboxProject("mobile", "sandbox-mobile-api-key", "sandbox-mobile-secret-key", 281811),
)


def authenticate(
    header: str | None, projects: Sequence[SandboxProject]
) -> tuple[SandboxProject | None, int, str]:
    """(the project whose keys the Basic header carries, 200, "") or (None, 401/403, message)."""
    if not header or not header.lower().startswith("basic "):
        return None, 401, "Missing credentials: use HTTP Basic auth (api_key:secret_key)"
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        api_key, _, secret_key = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, 401, "Malformed Basic credentials"
    for project in projects:
        if project.api_key == api_key and project.secret_key == secret_key:
            return project, 200, ""
    return None, 403, "Invalid API Key"


def entry_name(project_id: int, hour: datetime, part: int) -> str:
    """The archive entry name Amplitude uses: `{id}/{id}_{YYYY-MM-DD}_{H}#{n}.json.gz`."""
    return f"{project_id}/{project_id}_{hour:%Y-%m-%d}_{hour.hour}#{part}.json.gz"


def encode_event(event: dict[str, Any]) -> bytes:
    """One NDJSON line (compact JSON, UTF-8, no line break) as Amplitude exports it."""
    return _encode(event).encode()


def write_archive(
    target: IO[bytes] | Path,
    project_id: int,
    hours: Iterable[tuple[datetime, Iterable[dict[str, Any]]]],
    *,
    events_per_part: int = DEFAULT_EVENTS_PER_PART,
    compression: int = zipfile.ZIP_STORED,
) -> int:
    """Write an export ZIP of (hour, events) pairs; returns the number of events written.

    Hours without events get no entry; an hour with more than `events_per_part`
    events is split into parts `#0`, `#1`, ... Entry timestamps are the hour and
    gzip's mtime is 0, so the bytes depend only on the events.
    """
    if events_per_part < 1:
        raise ValueError(f"events_per_part must be at least 1, got {events_per_part}")
    written = 0
    with zipfile.ZipFile(target, "w", compression=compression, allowZip64=True) as archive:
        for hour, events in hours:
            stream = iter(events)
            part = 0
            while True:
                batch = list(islice(stream, min(_WRITE_BATCH, events_per_part)))
                if not batch:
                    break
                info = zipfile.ZipInfo(
                    entry_name(project_id, hour, part),
                    date_time=(hour.year, hour.month, hour.day, hour.hour, 0, 0),
                )
                info.compress_type = compression
                info.create_system = 3
                info.external_attr = 0o644 << 16
                in_part = 0
                with (
                    archive.open(info, "w") as entry,
                    gzip.GzipFile(
                        filename="", mode="wb", fileobj=entry, mtime=0, compresslevel=GZIP_LEVEL
                    ) as gz,
                ):
                    while batch:
                        gz.write(b"".join(_encode(event).encode() + b"\n" for event in batch))
                        in_part += len(batch)
                        written += len(batch)
                        room = events_per_part - in_part
                        batch = list(islice(stream, min(_WRITE_BATCH, room))) if room else []
                part += 1
    return written
