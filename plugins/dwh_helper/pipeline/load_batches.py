"""The reader's side of a load: records decoded and mapped into batches of COPY text per table.

A record the fast path declines goes through the mapping's checked path (values stored NULL
or repaired are reported); a record neither can map is rejected with file, entry, line and
reason. Full batches are sealed into bytes and handed to the batch writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dwh_helper.dwh.load_journal import Reject
from dwh_helper.pipeline.batch_writer import hand_over
from dwh_helper.pipeline.load_errors import without_value
from dwh_helper.pipeline.load_model import LoadResult, RawFormat, RecordMapping
from dwh_helper.transform.event_mapping import parse_json_line
from dwh_helper.transform.values import RefusedValue, shown

log = logging.getLogger(__name__)

FIRST_BATCH_SIZE = 1_000


PROGRESS_EVERY_SECONDS = 30.0


class Batch:
    """COPY lines per table and rejects, gathered until the batch is full."""

    def __init__(self, tables: tuple[Any, ...]) -> None:
        self.lines: dict[Any, list[str]] = {table: [] for table in tables}
        self.origins: dict[Any, list[tuple[str, int, int]]] = {table: [] for table in tables}
        """Where a table's lines came from, as runs of (entry, first line, count), for tables
        that do not take a line from every record (first per file) and for chunked reads."""
        self.where: list[tuple[str, int, int]] = []
        """Where each record that gave lines came from (record by record reads)."""
        self.rejects: list[Reject] = []
        self.records = 0
        self.payload: dict[Any, bytes] = {}

    def seal(self, encoding: str) -> None:
        """Turn each table's lines into the bytes COPY sends (done by the reader, so the
        writer needs little of the interpreter while the database reads the data)."""
        for table, lines in self.lines.items():
            if lines:
                lines.append("")  # the last line's newline
                text = "\n".join(lines)
                try:
                    self.payload[table] = text.encode(encoding)
                except UnicodeEncodeError:  # a value the layer let through: left to the writer
                    self.payload[table] = text.encode(encoding, "surrogateescape")
        self.lines = {}


class Batches:
    """The batch being filled, handed to the writer when full; rejects; progress in the log.

    Counts go straight into the load's result (records read so far, rejected), so a load
    that fails part-way journals how far it got.
    """

    def __init__(
        self,
        submit: Callable[[Batch], None],
        encoding: str,
        mapping: RecordMapping,
        key: str,
        batch_size: int,
        result: LoadResult,
    ) -> None:
        self.send, self.encoding = submit, encoding
        self.mapping, self.key, self.result = mapping, key, result
        self.batch_size = batch_size
        self.batch = Batch(mapping.tables)
        # the first batches are small so the database starts early, then they double up to
        # batch_size: the reader's head start and the writer's tail stay short
        self.limit = min(batch_size, FIRST_BATCH_SIZE)
        self.next_progress = time.perf_counter() + PROGRESS_EVERY_SECONDS

    def add(self, count: int) -> None:
        """Count records added to the batch; submit it when full."""
        self.batch.records += count
        if self.batch.records >= self.limit:
            self.submit()
            self.limit = min(self.limit * 2, self.batch_size)
            now = time.perf_counter()
            if now >= self.next_progress:
                self.next_progress = now + PROGRESS_EVERY_SECONDS
                log.info(
                    "%s: %d records read, %d rejected so far",
                    self.key,
                    self.result.rows_read,
                    self.result.rejected,
                )

    def submit(self) -> None:
        """Hand the current batch to the writer (if it holds anything) and start a new one."""
        if self.batch.records:
            self.result.rows_read += self.batch.records
            self.batch.seal(self.encoding)
            self.send(self.batch)
            self.batch = Batch(self.mapping.tables)

    def checked(
        self,
        where: tuple[str, int],
        raw: Any,
        declined: Exception,
        map_checked: Callable[[Any], Any] | None,
    ) -> Any:
        """The fast path declined a record: the mapping's checked path decides. Its result
        (values stored NULL or repaired are reported), or None when the record is rejected."""
        if map_checked is None:
            if not isinstance(declined, ValueError | TypeError):
                raise declined
            self.reject(where, raw, declined)
            return None
        try:
            checked = map_checked(raw)
        except (ValueError, TypeError, RecursionError) as refused:
            self.reject(where, raw, refused)
            return None
        if checked.reports or checked.repairs:
            self.report(where, checked)
        return checked

    def reject(self, where: tuple[str, int], raw: Any, exc: Exception) -> None:
        """Keep a record that could not be mapped: file, entry, line, reason and the record."""
        entry, line = where
        result, mapping = self.result, self.mapping
        result.rejected += 1
        if len(result.reject_reasons) < 10:
            result.reject_reasons.append(f"{entry}:{line}: {without_value(exc)}")
        describe = getattr(mapping, "reject_record", None)
        kept = describe(raw) if describe is not None else _raw_for_reject(raw)
        refused = exc if isinstance(exc, RefusedValue) else None
        self.batch.rejects.append(
            Reject(
                source=mapping.source,
                reason=str(exc),
                s3_key=self.key,
                record_id=_record_id(kept, mapping.record_id),
                entry=entry,
                line=line,
                raw=kept,
                table_name=refused.table if refused else None,
                column_name=refused.column if refused else None,
                value=shown(refused.value) if refused else None,
            )
        )

    def report(self, where: tuple[str, int], checked: Any) -> None:
        """Count what the checked path did to a record that loads: values stored NULL (each
        kept in load_rejects with kind 'value') and values repaired (NUL removed)."""
        entry, line = where
        self.result.values_repaired += checked.repairs
        for report in checked.reports:
            self.result.values_nulled += 1
            self.batch.rejects.append(
                Reject.value_report(
                    self.mapping.source,
                    f"{report.table}.{report.column}: {report.reason}; stored NULL",
                    table=report.table,
                    column=report.column,
                    value=shown(report.value),
                    s3_key=self.key,
                    record_id=checked.record_id,
                    entry=entry,
                    line=line,
                )
            )


def read_into(
    batches: Batches,
    source_file: Any,
    mapping: RecordMapping,
    raw_format: RawFormat,
    known_months: set[str] | None,
) -> None:
    """Read, decode and map every record of the file into batches handed to the writer.

    With `known_months` (the months events_part has partitions for), a record of another
    month raises MissingPartition before its batch is sent.
    """
    by_chunk = (
        raw_format.chunks is not None
        and hasattr(mapping, "line")
        and raw_format.month_of is None
        and len(mapping.tables) == 1
        and not mapping.tables[0].first_per_file
    )
    if by_chunk:
        _read_chunks(batches, source_file, raw_format)
    else:
        _read_records(batches, source_file, raw_format, known_months)
    batches.submit()


HAND_OVER_MASK = 127
"""The reader yields the GIL every 128 records (without it the database idles)."""


def _read_records(
    batches: Batches, source_file: Any, raw_format: RawFormat, known_months: set[str] | None
) -> None:
    """Record by record: decode, map to every table, first row per key per file."""
    mapping = batches.mapping
    seen: dict[Any, set[str]] = {table: set() for table in mapping.tables}
    decode, map_record, month_of = mapping.decode, mapping.map_record, raw_format.month_of
    map_checked = getattr(mapping, "map_checked", None)
    for entry, line, raw in raw_format.records(source_file):
        if not batches.batch.records & HAND_OVER_MASK:
            hand_over()
        try:
            record = decode(raw)
            mapped = map_record(record)
        except Exception as exc:  # noqa: BLE001 - the fast path declined
            checked = batches.checked((entry, line), raw, exc, map_checked)
            if checked is None:
                batches.add(1)
                continue
            record, mapped = checked.record, checked.lines
        if month_of is not None and known_months is not None:
            month = month_of(record)
            if month and month not in known_months:
                raise MissingPartition({month})
        batch = batches.batch
        lines_of = batch.lines
        where = (entry, line, 1)
        batch.where.append(where)  # a table with a line per record takes its origins from here
        for table, text, dedup_key in mapped:
            if text is not None:
                if dedup_key is not None:  # first row per key within the file wins
                    known = seen[table]
                    if dedup_key in known:
                        continue
                    known.add(dedup_key)
                    batch.origins[table].append(where)
                lines_of[table].append(text)
        batches.add(1)


def _read_chunks(batches: Batches, source_file: Any, raw_format: RawFormat) -> None:
    """Chunk by chunk, for a single-table mapping with `line`: one call maps a whole chunk;
    a chunk holding a bad record is redone record by record to reject just that one."""
    mapping: Any = batches.mapping
    (table,) = mapping.tables
    assert raw_format.chunks is not None
    map_checked = getattr(mapping, "map_checked", None)
    unhanded = 0  # records since the writer last had a chance at the GIL
    for entry, first, raws in raw_format.chunks(source_file):
        line = mapping.line  # bound once the file's header is read
        lines = batches.batch.lines[table]
        origins = batches.batch.origins[table]
        before = len(lines)
        try:
            lines.extend(map(line, raws))
            origins.append((entry, first, len(raws)))
        except Exception:  # noqa: BLE001 - the chunk is redone record by record below
            del lines[before:]
            for offset, raw in enumerate(raws):
                where = (entry, first + offset)
                try:
                    lines.append(line(raw))
                except Exception as exc:  # noqa: BLE001 - the fast path declined
                    checked = batches.checked(where, raw, exc, map_checked)
                    if checked is None:
                        continue
                    lines.append(checked.lines[0][1])
                origins.append((entry, first + offset, 1))
        unhanded += len(raws)
        if unhanded > HAND_OVER_MASK:  # every 128 records or so, whatever the chunks' size
            unhanded = 0
            hand_over()
        batches.add(len(raws))


class MissingPartition(Exception):
    """Raised by the reader before a row of a month without a partition is sent."""

    def __init__(self, months: set[str]) -> None:
        super().__init__(", ".join(sorted(months)))
        self.months = months


def _record_id(kept: Any, field_name: str) -> str | None:
    value = kept.get(field_name) if isinstance(kept, dict) else None
    return None if value is None else str(value)


def _raw_for_reject(raw: Any) -> Any:
    """The rejected record as JSON for load_rejects: the object, or the line as text."""
    if isinstance(raw, bytes | bytearray):
        try:
            return parse_json_line(bytes(raw))
        except ValueError:
            return {"unparsed_line": bytes(raw).decode("utf-8", errors="replace")[:10000]}
    return raw
