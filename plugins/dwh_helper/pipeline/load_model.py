"""What the raw-file loader is given (mapping, raw format) and gives back (LoadResult)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from dwh_helper.dwh.copy_text import CopyDialect
from dwh_helper.dwh.tables import TableSpec

DEFAULT_BATCH_SIZE = 10_000


class TargetTable(Protocol):
    """What the loader needs of a mapping's table: its spec and the columns it fills."""

    spec: TableSpec
    columns: tuple[str, ...]
    first_per_file: bool
    copy_dialect: CopyDialect
    """The NULL marker and delimiter its COPY lines use."""


class RecordMapping(Protocol):
    """A mapping: its source, its tables in load order, and raw record → per-table COPY lines.

    A mapping with a single table may also offer `line(raw) -> str` (decode and map in one
    call, ValueError/TypeError for a bad record); with a RawFormat that reads `chunks`, the
    loader then maps a whole chunk of records in one call. A mapping may also offer
    `reject_record(raw)`: the record as load_rejects keeps it (say, field → value).
    """

    source: str
    record_id: str
    tables: tuple[Any, ...]

    def decode(self, raw: Any) -> Any:
        """A raw record (bytes of a line, a dict of strings, ...) as the mapper's record."""
        ...

    def map_record(self, record: Any) -> list[tuple[Any, str | None, str | None]]:
        """[(table, COPY line or None, first-per-file key or None), ...]; raises on a bad record."""
        ...


@dataclass(frozen=True)
class RawFormat:
    """How to read one kind of raw file: its records (entry, line, raw), and hooks around a load."""

    source: str
    records: Callable[[Any], Iterator[tuple[str, int, Any]]]
    month_of: Callable[[Any], str | None] | None = None
    streamed: bool = False
    """False: `records` gets the path of the whole downloaded file (a ZIP needs its end).
    True: `records` gets a binary reader streaming the object from S3 (read once, in order)."""
    after_commit: Callable[[psycopg.Connection, LoadResult], None] | None = None
    """Optional work after the load committed (own connection): logged and retried on its
    own; its failure is noted in the journal and never fails the committed load."""
    chunks: Callable[[Any], Iterator[tuple[str, int, list[Any]]]] | None = None
    """Optional: the records in lists, as (entry, number of the first record, records)."""


@dataclass
class LoadResult:
    """What one file's load did."""

    key: str
    source: str
    rows_read: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    values_nulled: int = 0
    values_repaired: int = 0
    seconds: float = 0.0
    reject_reasons: list[str] = field(default_factory=list)
    status: str = "loaded"
    """`loaded`, or `already loaded` when another load committed the same content meanwhile."""
    bytes: int | None = None
    sha256: str | None = None
    verified: bool | None = None
    """True: size and SHA-256 matched what extract recorded; None: nothing was recorded."""
    attempt_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Extra facts for load_log.details (e.g. the identity an AppMetrica file was keyed by)."""

    def reset_counts(self) -> None:
        """Forget the counts of a pass that was rolled back (before loading again)."""
        self.rows_read = 0
        self.inserted = {}
        self.rejected = 0
        self.values_nulled = 0
        self.values_repaired = 0
        self.reject_reasons = []

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (XCom, API answers)."""
        return {
            "key": self.key,
            "source": self.source,
            "status": self.status,
            "rows_read": self.rows_read,
            "inserted": dict(self.inserted),
            "rejected": self.rejected,
            "values_nulled": self.values_nulled,
            "values_repaired": self.values_repaired,
            "seconds": round(self.seconds, 3),
        }
