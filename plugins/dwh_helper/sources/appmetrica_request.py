"""AppMetrica Logs API requests: what to export, the parts downloaded, a download in progress."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dwh_helper.catalogue.appmetrica import FORMATS
from dwh_helper.sources.appmetrica_errors import AppMetricaTooLarge

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_DIMENSIONS: tuple[str, ...] = ("default", "receive")
#: AppMetrica's answer to a part too large for one file contains these words.
MORE_PARTS_MARKER = "try to use more parts"
MAX_PARTS_COUNT = 1024
_PROGRESS = re.compile(r"progress is (\d+)\s*%", re.IGNORECASE)


@dataclass(frozen=True)
class ExportRequest:
    """One Logs API export: a resource of one application over [since, until] (inclusive)."""

    resource: str
    application_id: str
    since: datetime
    until: datetime
    fields: tuple[str, ...]
    date_dimension: str = "default"
    use_utf8_bom: bool = False
    skip_unavailable_shards: bool = False
    fmt: str = "csv"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_0-9]+", self.resource or ""):
            raise ValueError(f"resource {self.resource!r} is not a Logs API resource name")
        if not isinstance(self.application_id, str) or not self.application_id.isdigit():
            raise ValueError(f"application_id {self.application_id!r} must be a numeric id as text")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt {self.fmt!r}: use 'csv' or 'json'")
        if self.date_dimension not in DATE_DIMENSIONS:
            raise ValueError(f"date_dimension {self.date_dimension!r}: use 'default' or 'receive'")
        if not isinstance(self.fields, tuple):
            raise TypeError(f"fields must be a tuple of Logs API field names, got {self.fields!r}")
        if not self.fields:
            raise ValueError("fields is empty: name at least one Logs API field")
        if self.until < self.since:
            raise ValueError(f"until ({self.until}) is before since ({self.since})")

    @property
    def path(self) -> str:
        """The URL path, e.g. `/logs/v1/export/events.csv`."""
        return f"/logs/v1/export/{self.resource}.{self.fmt}"

    def params(self, parts_count: int = 1, part_number: int = 0) -> dict[str, str]:
        """The query parameters; `parts_count`/`part_number` only when split into parts."""
        params = {
            "application_id": self.application_id,
            "date_since": self.since.strftime(DATE_FORMAT),
            "date_until": self.until.strftime(DATE_FORMAT),
            "fields": ",".join(self.fields),
            "date_dimension": self.date_dimension,
            "use_utf8_bom": "true" if self.use_utf8_bom else "false",
        }
        if self.skip_unavailable_shards:
            params["skip_unavailable_shards"] = "true"
        if parts_count > 1:
            params["parts_count"] = str(parts_count)
            params["part_number"] = str(part_number)
        return params

    def describe(self, parts_count: int = 1, part_number: int = 0) -> str:
        """A short label for logs and errors (never the token)."""
        label = (
            f"{self.resource}.{self.fmt} app={self.application_id} "
            f"[{self.since:%Y-%m-%d %H:%M:%S} .. {self.until:%Y-%m-%d %H:%M:%S}]"
        )
        if parts_count > 1:
            label += f" part {part_number + 1}/{parts_count}"
        return label

    def file_name(self, parts_count: int = 1, part_number: int = 0) -> str:
        """A deterministic file name for one part."""
        return (
            f"{self.resource}_{self.application_id}_{self.since:%Y%m%dT%H%M%S}_"
            f"{self.until:%Y%m%dT%H%M%S}_part{part_number + 1:04d}of{parts_count:04d}.{self.fmt}"
        )


@dataclass(frozen=True)
class ExportedPart:
    """One downloaded file: where it is, which part of how many, its size in bytes."""

    path: Path
    part_number: int
    parts_count: int
    size: int


@dataclass(frozen=True)
class Preparing:
    """AppMetrica's 202: the file is being prepared; ask the identical request again later."""

    message: str

    @property
    def progress(self) -> str:
        """`NN%` when AppMetrica said how far it is, else its whole answer."""
        found = _PROGRESS.search(self.message)
        return f"{found.group(1)}%" if found else self.message


@dataclass
class PartsDownload:
    """One request's parts being downloaded; `parts_count` doubles while a part is too large.

    `polls`, `since` and `last_answer` describe the part in progress (202s seen,
    when the download last made progress, AppMetrica's last words) for logs and
    the polling deadline.
    """

    request: ExportRequest
    parts_count: int = 1
    parts: dict[int, ExportedPart] = field(default_factory=dict)
    polls: int = 0
    since: float = 0.0
    last_answer: str = ""

    @property
    def done(self) -> bool:
        """Whether every part is downloaded."""
        return not self.pending()

    def pending(self) -> list[int]:
        """The part numbers not downloaded yet, in order."""
        return [number for number in range(self.parts_count) if number not in self.parts]

    def files(self) -> list[ExportedPart]:
        """The downloaded parts in part order."""
        return [self.parts[number] for number in sorted(self.parts)]

    def preparing(self, answer: Preparing) -> None:
        """Count one more 202 for the part in progress."""
        self.polls += 1
        self.last_answer = answer.message

    def saved(self, part: ExportedPart, now: float) -> None:
        """Keep a downloaded part; the deadline starts again for the next one."""
        self.parts[part.part_number] = part
        self.progressed(now)

    def double(self, too_large: AppMetricaTooLarge, now: float) -> None:
        """Ask for twice as many parts, dropping the files of the smaller ones (raise past 1024)."""
        if self.parts_count * 2 > MAX_PARTS_COUNT:
            raise too_large
        for part in self.parts.values():
            part.path.unlink(missing_ok=True)
        self.parts.clear()
        self.parts_count *= 2
        self.progressed(now)

    def progressed(self, now: float) -> None:
        """Restart the polling deadline at `now`."""
        self.polls = 0
        self.since = now
        self.last_answer = ""
