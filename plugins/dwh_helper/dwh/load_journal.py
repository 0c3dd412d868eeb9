"""Bad records of a load: `load_rejects` (the load_log lifecycle is in `dwh.load_log`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
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
