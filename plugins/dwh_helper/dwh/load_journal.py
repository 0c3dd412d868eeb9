"""Bad records of a load: `load_rejects` (the load_log lifecycle is in `dwh.load_log`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from dwh_helper.dwh.copy_text import copy_line
from dwh_helper.transform.values import safe_json, safe_text

REJECT_KINDS = ("record", "value")
"""load_rejects.kind: 'record' — the record was rejected (not loaded); 'value' — one value was
stored NULL and the record loaded."""


@dataclass(frozen=True)
class Reject:
    """A record that could not be loaded, or a value stored NULL: where it was and why."""

    source: str
    reason: str
    s3_key: str | None = None
    record_id: str | None = None
    entry: str | None = None
    line: int | None = None
    raw: Any = None
    kind: str = "record"
    table_name: str | None = None
    column_name: str | None = None
    value: str | None = None

    @classmethod
    def value_report(
        cls,
        source: str,
        reason: str,
        *,
        table: str | None,
        column: str | None,
        value: str | None,
        s3_key: str | None = None,
        record_id: str | None = None,
        entry: str | None = None,
        line: int | None = None,
    ) -> Reject:
        """A value stored NULL in a record that loaded (kind `value`)."""
        return cls(
            source=source,
            reason=reason,
            s3_key=s3_key,
            record_id=record_id,
            entry=entry,
            line=line,
            kind="value",
            table_name=table,
            column_name=column,
            value=value,
        )

    def copy_line(self) -> str:
        """The reject as a COPY text line for load_rejects (NUL and lone surrogates, which
        PostgreSQL cannot store, shown as `\\u0000` / `\\udXXX` escapes)."""
        raw = None
        if self.raw is not None:
            raw = json.dumps(safe_json(self.raw), ensure_ascii=False, default=repr)
        return copy_line(
            (
                _safe(self.source),
                _safe(self.s3_key),
                _safe(self.record_id),
                _safe(self.entry),
                self.line,
                _safe(self.reason),
                raw,
                self.kind,
                _safe(self.table_name),
                _safe(self.column_name),
                _safe(self.value),
            )
        )


def _safe(text: Any) -> str | None:
    return None if text is None else safe_text(str(text))


REJECT_COLUMNS = (
    "source",
    "s3_key",
    "record_id",
    "entry",
    "line",
    "reason",
    "raw",
    "kind",
    "table_name",
    "column_name",
    "value",
)


def write_rejects(conn: psycopg.Connection, rejects: Iterable[Reject]) -> int:
    """COPY rejects into load_rejects (in the caller's transaction); returns how many.

    The one reject writer of every path (Amplitude, AppMetrica, user properties, API).
    """
    count = 0
    with conn.cursor() as cursor:
        with cursor.copy(f"COPY load_rejects ({', '.join(REJECT_COLUMNS)}) FROM STDIN") as copy:
            for reject in rejects:
                copy.write(reject.copy_line() + "\n")
                count += 1
    return count
