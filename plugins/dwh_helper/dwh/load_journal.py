"""The load journal: `load_log` (one row per raw file loaded) and `load_rejects` (bad records)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dwh_helper.dwh.copy_text import copy_line


@dataclass(frozen=True)
class Reject:
    """A record that could not be loaded: where it was and why."""

    source: str
    reason: str
    s3_key: str | None = None
    record_id: str | None = None
    entry: str | None = None
    line: int | None = None
    raw: Any = None

    def copy_line(self) -> str:
        """The reject as a COPY text line for load_rejects."""
        return copy_line(
            (
                self.source,
                self.s3_key,
                self.record_id,
                self.entry,
                self.line,
                self.reason,
                json.dumps(self.raw, ensure_ascii=False) if self.raw is not None else None,
            )
        )


REJECT_COLUMNS = ("source", "s3_key", "record_id", "entry", "line", "reason", "raw")


def write_rejects(conn: psycopg.Connection, rejects: Iterable[Reject]) -> int:
    """COPY rejects into load_rejects (in the caller's transaction); returns how many."""
    count = 0
    with conn.cursor() as cursor:
        with cursor.copy(f"COPY load_rejects ({', '.join(REJECT_COLUMNS)}) FROM STDIN") as copy:
            for reject in rejects:
                copy.write(reject.copy_line() + "\n")
                count += 1
    return count


def write_load_log(
    conn: psycopg.Connection,
    *,
    source: str,
    s3_key: str,
    started_at: datetime,
    status: str,
    rows_read: int = 0,
    rows_inserted: Mapping[str, int] | None = None,
    rows_rejected: int = 0,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    error: str | None = None,
) -> int:
    """Insert one load_log row (in the caller's transaction); returns its id."""
    row = conn.execute(
        "INSERT INTO load_log (source, s3_key, window_start, window_end, rows_read, rows_inserted, "
        "rows_rejected, started_at, finished_at, status, error) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s) RETURNING id",
        (
            source,
            s3_key,
            window_start,
            window_end,
            rows_read,
            json.dumps(dict(rows_inserted or {})),
            rows_rejected,
            started_at,
            status,
            error,
        ),
    ).fetchone()
    assert row is not None
    return row[0]
