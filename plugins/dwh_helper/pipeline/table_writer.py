"""The writer's side of a load: one batch COPY'd into its tables in the file's transaction.

Optimistic COPY: a normal daily load writes rows that are not in the DWH yet, so each table's
lines are first COPY'd straight into the table in a savepoint (what raw COPY costs). A unique
conflict rolls the savepoint back and the lines go through staging + ON CONFLICT DO NOTHING
(the idempotent path) — and so does the rest of the file: it overlaps data already loaded.
Duplicate keys inside one batch do not count as a conflict: the batch is deduplicated (first
row wins, memory bounded by the batch) and COPY'd straight again. Tables whose keys recur
across files by design (`first_per_file`: mobile_devices, a device in every day it is seen)
always go through staging. A data error also sends the batch through staging, where the
recovery below finds the refused row.

PostgreSQL refusing a row the value layer let through is the last line of defence: the
refused row is found (the COPY line the error names, else by halving), rejected with
PostgreSQL's reason — or, for an `on_invalid: null` column, its value stored NULL — and the
rest of the batch loads.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from dwh_helper.dwh.load_journal import Reject, write_rejects
from dwh_helper.dwh.repository import Repository
from dwh_helper.pipeline.load_batches import Batch
from dwh_helper.pipeline.load_errors import copy_context, describe_error
from dwh_helper.pipeline.load_model import LoadResult
from dwh_helper.transform.values import shown

log = logging.getLogger(__name__)


class TableWriter:
    """Writes one batch into its tables in the file's transaction (the `BatchWriter`'s job)."""

    def __init__(
        self,
        repo: Repository,
        conn: psycopg.Connection,
        result: LoadResult,
        record_id: str = "",
        *,
        optimistic: bool = True,
        skip_present: bool = False,
    ) -> None:
        self.repo, self.conn, self.result = repo, conn, result
        self.record_id = record_id
        self.encoding = conn.info.encoding
        self.optimistic = optimistic
        """True while this file's batches are COPY'd straight into their tables."""
        self.skip_present = skip_present
        """True once most rows are expected in the tables already (a re-load, a key loaded
        before, a conflict met): staging skips present rows on their key before PostgreSQL
        reads their other values. For new rows that lookup is extra work (20% more database
        time for a staged first load), so it is not used before."""
        self.deduplicating: set[Any] = set()
        """Tables whose batches held duplicate keys: deduplicated before each straight COPY."""
        self.batches = 0
        self.direct_rows = 0
        """Rows COPY'd straight into their tables (the rest went through staging)."""

    def write(self, batch: Batch) -> None:
        """COPY each table's lines, keep the batch's rejects; free the batch's bytes."""
        self.batches += 1
        for table, data in batch.payload.items():
            inserted = None
            if self.optimistic and goes_straight(table):
                inserted = self._direct(table, data)
            if inserted is None:
                inserted = self._staged(table, data, batch)
            name = table.spec.name
            self.result.inserted[name] = self.result.inserted.get(name, 0) + inserted
        batch.payload = {}  # free the batch's text as soon as it is in the database
        if batch.rejects:
            write_rejects(self.conn, batch.rejects)

    def _direct(self, table: Any, data: bytes) -> int | None:
        """COPY straight into the table in a savepoint; None: load it through staging."""
        sent = data
        if table in self.deduplicating:
            sent, _dropped = without_duplicate_keys(table, data)
        try:
            inserted = self.repo.copy_text(
                table.spec, table.columns, [sent], dialect=table.copy_dialect, direct=True
            )
        except psycopg.errors.UniqueViolation:
            if table not in self.deduplicating and without_duplicate_keys(table, data)[1]:
                self.deduplicating.add(table)
                log.info(
                    "%s: duplicate %s keys inside a batch: deduplicating its batches",
                    self.result.key,
                    table.spec.name,
                )
                return self._direct(table, data)
            self.optimistic = False
            self.skip_present = True
            log.info(
                "%s: batch %d of %s meets rows already in the DWH: the rest of the file goes "
                "through staging + ON CONFLICT DO NOTHING",
                self.result.key,
                self.batches,
                table.spec.name,
            )
            return None
        except (psycopg.DataError, psycopg.IntegrityError):
            return None  # staging's recovery finds the refused row(s)
        self.direct_rows += inserted
        return inserted

    def _staged(self, table: Any, data: bytes, batch: Batch) -> int:
        """Staging + ON CONFLICT DO NOTHING; a row PostgreSQL refuses is found and rejected.

        With `skip_present`, rows already in the table are skipped on their key before
        PostgreSQL reads their other values; if a value is refused, the batch goes through
        the typed staging, whose COPY names the refused line.
        """
        if self.skip_present:
            try:
                return self.repo.copy_text(
                    table.spec, table.columns, [data], dialect=table.copy_dialect, skip_present=True
                )
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    raise
        try:
            return self._copy(table, data)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise
            return self._recover(table, data, exc, batch)

    def _copy(self, table: Any, data: bytes) -> int:
        """COPY one table's lines (in a savepoint of the file's transaction)."""
        return self.repo.copy_text(table.spec, table.columns, [data], dialect=table.copy_dialect)

    def _recover(
        self,
        table: Any,
        data: bytes,
        error: psycopg.Error,
        batch: Batch,
    ) -> int:
        """The last line of defence: PostgreSQL refused a batch the value layer let through.
        Find the refused row(s) — the COPY line named in the error, else by halving — reject
        them with PostgreSQL's reason, and load the rest (each try in its own savepoint)."""
        lines = data.split(b"\n")[:-1]
        origins = _expand(batch.origins.get(table, []))
        if len(origins) != len(lines):
            origins = _expand(batch.where)
        if len(origins) != len(lines):  # a table that skipped some records: origins unknown
            origins = [(None, None)] * len(lines)
        log.warning(
            "%s: PostgreSQL refused a batch of %d row(s) for %s (%s); finding the row(s)",
            self.result.key,
            len(lines),
            table.spec.name,
            describe_error(error),
        )
        return self._split(table, lines, origins, error, batch)

    def _split(
        self,
        table: Any,
        lines: list[bytes],
        origins: list[tuple[str | None, int | None]],
        error: psycopg.Error,
        batch: Batch,
    ) -> int:
        if len(lines) == 1:
            self._reject_row(table, lines[0], origins[0], error, batch)
            return 0
        bad, column = copy_context(error)
        if bad is not None and 1 <= bad <= len(lines):
            fixed = None
            if column in getattr(table, "null_on_invalid", ()):
                fixed = self._null_value(
                    table, lines[bad - 1], column, origins[bad - 1], error, batch
                )
            if fixed is not None:  # the value stored NULL and reported; the row goes on
                rest = [fixed, *lines[bad:]]
                parts = [(lines[: bad - 1], origins[: bad - 1]), (rest, origins[bad - 1 :])]
            else:
                self._reject_row(table, lines[bad - 1], origins[bad - 1], error, batch)
                parts = [(lines[: bad - 1], origins[: bad - 1]), (lines[bad:], origins[bad:])]
        else:
            middle = len(lines) // 2
            parts = [(lines[:middle], origins[:middle]), (lines[middle:], origins[middle:])]
        inserted = 0
        for part, where in parts:
            if not part:
                continue
            try:
                inserted += self._copy(table, b"\n".join(part) + b"\n")
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    raise
                inserted += self._split(table, part, where, exc, batch)
        return inserted

    def _null_value(
        self,
        table: Any,
        line: bytes,
        column: str,
        origin: tuple[str | None, int | None],
        error: psycopg.Error,
        batch: Batch,
    ) -> bytes | None:
        """The line with `column` set NULL (and the value reported), or None if not found."""
        dialect = table.copy_dialect
        delimiter = dialect.delimiter.encode()
        fields = line.split(delimiter)
        try:
            position = list(table.columns).index(column)
        except ValueError:
            return None
        if position >= len(fields):
            return None
        value = fields[position].decode(self.encoding, "surrogateescape")
        fields[position] = dialect.null.encode()
        entry, number = origin
        row = dict(zip(table.columns, line.split(delimiter), strict=False))
        record_key = row.get(self.record_id) or next(iter(row.values()), b"")
        self.result.values_nulled += 1
        batch.rejects.append(
            Reject(
                source=self.result.source,
                reason=f"{table.spec.name}.{column}: PostgreSQL refused the value "
                f"({describe_error(error)}); stored NULL",
                s3_key=self.result.key,
                record_id=record_key.decode(self.encoding, "surrogateescape") or None,
                entry=entry,
                line=number,
                kind="value",
                table_name=table.spec.name,
                column_name=column,
                value=shown(value),
            )
        )
        return delimiter.join(fields)

    def _reject_row(
        self,
        table: Any,
        line: bytes,
        origin: tuple[str | None, int | None],
        error: psycopg.Error,
        batch: Batch,
    ) -> None:
        """Keep a row PostgreSQL refused in load_rejects, with its reason (no row data)."""
        entry, number = origin
        text = line.decode(self.encoding, "surrogateescape")
        delimiter = table.copy_dialect.delimiter
        row = dict(zip(table.columns, text.split(delimiter), strict=False))
        reason = f"PostgreSQL refused the {table.spec.name} row: {describe_error(error)}"
        self.result.rejected += 1
        if len(self.result.reject_reasons) < 10:
            self.result.reject_reasons.append(f"{entry}:{number}: {reason}")
        batch.rejects.append(
            Reject(
                source=self.result.source,
                reason=reason,
                s3_key=self.result.key,
                record_id=row.get(self.record_id) or next(iter(row.values()), None),
                entry=entry,
                line=number,
                raw=row,
                table_name=table.spec.name,
                column_name=error.diag.column_name or copy_context(error)[1],
            )
        )


def _expand(runs: list[tuple[str, int, int]]) -> list[tuple[str | None, int | None]]:
    """Runs of (entry, first line, count) as one (entry, line) per COPY line."""
    return [(entry, first + offset) for entry, first, count in runs for offset in range(count)]


def goes_straight(table: Any) -> bool:
    """Whether a table's batches are tried with a straight COPY: not a table whose keys recur
    across files by design (first row per key per file: devices), and one whose COPY lines
    carry every key column (so a batch can be deduplicated)."""
    return not table.first_per_file and _key_positions(table) is not None


def without_duplicate_keys(table: Any, data: bytes) -> tuple[bytes, int]:
    """A batch's COPY lines with later rows of a repeated key dropped (first wins); how many."""
    positions = _key_positions(table)
    assert positions is not None
    delimiter = table.copy_dialect.delimiter.encode()
    last = max(positions) + 1
    lines = data.split(b"\n")
    lines.pop()  # after the last line's newline
    seen: set[tuple[bytes, ...]] = set()
    kept = []
    for line in lines:
        fields = line.split(delimiter, last)
        key = tuple(fields[position] for position in positions)
        if key not in seen:
            seen.add(key)
            kept.append(line)
    kept.append(b"")
    return b"\n".join(kept), len(lines) + 1 - len(kept)


def _key_positions(table: Any) -> tuple[int, ...] | None:
    columns = list(table.columns)
    try:
        return tuple(columns.index(name) for name in table.spec.key)
    except ValueError:
        return None
