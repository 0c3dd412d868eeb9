"""Load one raw file from S3 into the DWH: stream, parse, map, COPY — one transaction per file.

The main thread reads and maps records into COPY text; a writer thread ships
each finished batch to PostgreSQL (COPY into staging, INSERT … ON CONFLICT DO
NOTHING). Python's work on batch N+1 overlaps the server's work on batch N, and
at most three batches exist at a time (one being written, one queued, one being filled),
so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from dwh_helper.dwh.copy_text import CopyDialect
from dwh_helper.dwh.load_journal import Reject, write_rejects
from dwh_helper.dwh.load_log import (
    Completion,
    complete_attempt,
    loaded_since,
    lock_key,
    mark_abandoned,
    start_attempt,
    unlock_key,
)
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.schema import (
    PartitionUnavailable,
    create_month_partitions,
    month_partitions,
)
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.pipeline.batch_writer import BatchWriter, hand_over
from dwh_helper.pipeline.temp_files import load_temp_dir
from dwh_helper.pipeline.verify import (
    Expected,
    HashingReader,
    ObjectMismatch,
    check_digest,
    check_size,
    copy_hashing,
)
from dwh_helper.storage.s3 import ObjectInfo, ObjectReadError, ObjectStore
from dwh_helper.transform.event_mapping import parse_json_line
from dwh_helper.transform.values import RefusedValue, shown

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000
FIRST_BATCH_SIZE = 1_000
PROGRESS_EVERY_SECONDS = 30.0


class LoadError(RuntimeError):
    """A raw file could not be loaded; nothing of it was committed. Names the file (and the
    entry and line when known); `retryable` says whether running it again may succeed
    (connection loss, deadlock, serialization failure, timeout) or not (data, corrupt file,
    too many rejects). The message never carries row data."""

    def __init__(
        self,
        key: str,
        message: str,
        *,
        retryable: bool = False,
        entry: str | None = None,
        line: int | None = None,
    ) -> None:
        where = f" ({entry}" + (f", line {line}" if line is not None else "") + ")" if entry else ""
        super().__init__(f"{key}{where}: {message}")
        self.key = key
        self.retryable = retryable
        self.entry = entry
        self.line = line


class CorruptFile(Exception):
    """Raised by a format's reader when the file itself (not one record) is unreadable."""


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


class _Batch:
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


class _TableWriter:
    """Writes one batch into its tables in the file's transaction (the `BatchWriter`'s job)."""

    def __init__(
        self,
        repo: Repository,
        conn: psycopg.Connection,
        result: LoadResult,
        record_id: str = "",
    ) -> None:
        self.repo, self.conn, self.result = repo, conn, result
        self.record_id = record_id
        self.encoding = conn.info.encoding

    def write(self, batch: _Batch) -> None:
        """COPY each table's lines, keep the batch's rejects; free the batch's bytes."""
        for table, data in batch.payload.items():
            try:
                inserted = self._copy(table, data)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    raise
                inserted = self._recover(table, data, exc, batch)
            name = table.spec.name
            self.result.inserted[name] = self.result.inserted.get(name, 0) + inserted
        batch.payload = {}  # free the batch's text as soon as it is in the database
        if batch.rejects:
            write_rejects(self.conn, batch.rejects)

    def _copy(self, table: Any, data: bytes) -> int:
        """COPY one table's lines (in a savepoint of the file's transaction)."""
        return self.repo.copy_text(table.spec, table.columns, [data], dialect=table.copy_dialect)

    def _recover(
        self,
        table: Any,
        data: bytes,
        error: psycopg.Error,
        batch: _Batch,
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
        batch: _Batch,
    ) -> int:
        if len(lines) == 1:
            self._reject_row(table, lines[0], origins[0], error, batch)
            return 0
        bad = _copy_line_number(error)
        column = _copy_column(error)
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
        batch: _Batch,
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
        batch: _Batch,
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
                column_name=error.diag.column_name or _copy_column(error),
            )
        )


def load_raw_file(
    store: ObjectStore,
    key: str,
    repo: Repository,
    mapping: RecordMapping,
    raw_format: RawFormat,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reject_ratio: float = 0.01,
    window: tuple[datetime, datetime] | None = None,
    info: ObjectInfo | None = None,
    reload: bool = False,
    temp_dir: Path | None = None,
    months: Sequence[date] = (),
) -> LoadResult:
    """Load one raw file from S3 into the mapping's tables, all or nothing; journal it.

    The attempt is journalled `running` at once (its own transaction) and completed when it
    ends. Loads of one S3 key are serialised (an advisory lock on the key): a load that waited
    for another which committed the same content (SHA-256) finishes `already loaded` without
    reading the file, unless `reload`. The object is checked against the size and SHA-256
    `extract` recorded (size before reading, SHA-256 while streaming); events_part's month
    partitions are created before the data needs them (`months` up front, others when the
    reader meets them), outside the data transaction.
    Records that cannot be mapped go to load_rejects with file, entry, line and reason;
    the load fails (and commits nothing) when they exceed `reject_ratio` of the records.
    Loading the same file again inserts nothing new (ON CONFLICT DO NOTHING on every key).
    An invalid value of an `on_invalid: null` column is stored NULL and reported (kind
    'value'); PostgreSQL refusing a row the value layer let through rejects that row only.
    Every failure is a LoadError naming the file (see `as_load_error`).
    """
    started = time.perf_counter()
    result = LoadResult(key=key, source=raw_format.source)
    if info is None:
        info = store.head(key)
    if info is None:
        raise LoadError(key, f"no object s3://{store.bucket}/{key}; extract the day first")
    expected = Expected.of(info)
    with repo.connection() as conn:
        pinned = Repository(conn)  # one session: the key lock, the journal and the data
        with conn.transaction():
            attempt = start_attempt(conn, source=raw_format.source, s3_key=key, window=window)
        result.attempt_id = attempt
        locked = False
        try:
            lock_key(conn, key)
            locked = True
            with conn.transaction():
                abandoned = mark_abandoned(conn, key, attempt)
            if abandoned:
                log.warning(
                    "%s: earlier attempt(s) %s died while loading (their backend is gone); "
                    "marked abandoned",
                    key,
                    ", ".join(map(str, abandoned)),
                )
            same = None
            if expected.sha256 and not reload:
                same = loaded_since(conn, key, expected.sha256, attempt)
            if same is not None:
                result.status = "already loaded"
                result.sha256, result.bytes = expected.sha256, info.size
                result.details["same_as"] = same
                with conn.transaction():
                    complete_attempt(conn, attempt, _completion(result, expected))
                log.info(
                    "%s: already loaded with the same SHA-256 by load %d while this one waited "
                    "for it; nothing read (pass reload=True to load it again)",
                    key,
                    same,
                )
                result.seconds = time.perf_counter() - started
                return result
            if months:
                create_month_partitions(conn, months)
            _load_verified(
                store, key, pinned, conn, mapping, raw_format, info, expected, result,
                batch_size, reject_ratio, attempt, temp_dir, started,
            )  # fmt: skip
        except BaseException as exc:
            _journal_failure(repo, conn, attempt, result, expected, exc)
            raise _as_load_error(key, exc) from exc
        finally:
            if locked:
                _unlock(conn, key)
    _after_commit(repo, raw_format, result)
    return result


def _load_verified(
    store: ObjectStore,
    key: str,
    repo: Repository,
    conn: psycopg.Connection,
    mapping: RecordMapping,
    raw_format: RawFormat,
    info: ObjectInfo,
    expected: Expected,
    result: LoadResult,
    batch_size: int,
    reject_ratio: float,
    attempt: int,
    temp_dir: Path | None,
    started: float,
) -> None:
    """Check, read and load the object in one data transaction that also completes the journal."""
    if not expected.recorded:
        log.warning(
            "%s: no size/SHA-256 in the object's metadata (landed by hand?): loading it "
            "unverified (load_log.verified is NULL)",
            key,
        )
    try:
        check_size(expected, info.size)
    except ObjectMismatch as exc:
        result.bytes = info.size
        raise LoadError(key, str(exc)) from exc
    with load_temp_dir(temp_dir) as tmp:
        known: set[str] | None = None
        if raw_format.month_of is not None:
            known = month_partitions(conn)
        path = tmp / Path(key).name
        if not raw_format.streamed:
            with store.open_reader(key) as body, path.open("wb") as out:
                result.bytes, result.sha256 = copy_hashing(body, out)
            _verify(key, expected, result)
            log.info(
                "loading s3://%s/%s (%d bytes, downloaded and hashed in %.1fs)",
                store.bucket,
                key,
                result.bytes,
                time.perf_counter() - started,
            )
        for tries in range(1, PASSES + 1):
            result.reset_counts()
            try:
                _load_once(store, key, repo, conn, mapping, raw_format, path, expected, result,
                           batch_size, reject_ratio, attempt, known, started)  # fmt: skip
                return
            except psycopg.errors.DeadlockDetected as exc:
                # two loads of large files sharing keys across batches (say, devices) can still
                # meet in opposite orders; PostgreSQL rolled this one back: read it again
                if tries == PASSES:
                    raise
                log.warning("%s: rolled back by a deadlock (%s); loading again", key, exc)
                time.sleep(random.uniform(0.1, 1.0))
            except _MissingPartition as missing:
                # the data transaction was rolled back before any row of that month was sent
                months = _months_of_file(raw_format, mapping, store, key, path) | missing.months
                log.info(
                    "%s: events of month(s) without a partition (%s): creating them, then "
                    "loading again",
                    key,
                    ", ".join(sorted(missing.months)),
                )
                create_month_partitions(conn, _month_dates(months))
                known = month_partitions(conn)
        raise LoadError(
            key, f"not loaded in {PASSES} passes (month partitions kept missing)", retryable=True
        )


PASSES = 3
"""Passes over a file at most: a pass ends early when a month has no partition yet (created,
then read again) or when PostgreSQL picks the load as a deadlock's victim."""


def _load_once(
    store: ObjectStore,
    key: str,
    repo: Repository,
    conn: psycopg.Connection,
    mapping: RecordMapping,
    raw_format: RawFormat,
    path: Path,
    expected: Expected,
    result: LoadResult,
    batch_size: int,
    reject_ratio: float,
    attempt: int,
    known: set[str] | None,
    started: float,
) -> None:
    """One pass: read, map and write in the data transaction; verify; complete the journal."""
    with ExitStack() as cleanup:
        hashing: HashingReader | None = None
        if raw_format.streamed:
            hashing = HashingReader(cleanup.enter_context(store.open_reader(key)))
            source: Any = hashing.buffered()
            log.info("loading s3://%s/%s as it streams in", store.bucket, key)
        else:
            source = path
        with repo.transaction() as tx:
            tables = _TableWriter(repo, tx, result, mapping.record_id)
            with BatchWriter(tables.write) as writer:
                batches = _Batches(writer.submit, tables.encoding, mapping, key, batch_size, result)
                _read_into(batches, source, mapping, raw_format, known)
            if hashing is not None:
                result.bytes, result.sha256 = hashing.finish()
                _verify(key, expected, result)
            _check_rejects(key, result, reject_ratio)
            result.details.update(getattr(mapping, "details", None) or {})
            result.seconds = time.perf_counter() - started
            complete_attempt(tx, attempt, _completion(result, expected))
    log.info(
        "loaded %s: %d records, %d rejected, %d value(s) stored NULL, %d repaired, inserted %s "
        "in %.1fs (%.0f records/s; database busy %.1fs, reader waited %.1fs for it)",
        key,
        result.rows_read,
        result.rejected,
        result.values_nulled,
        result.values_repaired,
        result.inserted,
        result.seconds,
        result.rows_read / result.seconds if result.seconds else 0.0,
        writer.busy_seconds,
        writer.wait_seconds,
    )


def _verify(key: str, expected: Expected, result: LoadResult) -> None:
    assert result.bytes is not None and result.sha256 is not None
    try:
        check_digest(expected, result.bytes, result.sha256)
    except ObjectMismatch as exc:
        raise LoadError(key, str(exc)) from exc
    result.verified = True if expected.recorded else None


def _completion(result: LoadResult, expected: Expected, error: str | None = None) -> Completion:
    return Completion(
        status=result.status if error is None else "failed",
        rows_read=result.rows_read,
        rows_inserted=result.inserted,
        rows_rejected=result.rejected,
        values_nulled=result.values_nulled,
        values_repaired=result.values_repaired,
        bytes=result.bytes,
        sha256=result.sha256,
        verified=result.verified,
        error=error,
        details=result.details,
    )


class _MissingPartition(Exception):
    """Raised by the reader before a row of a month without a partition is sent."""

    def __init__(self, months: set[str]) -> None:
        super().__init__(", ".join(sorted(months)))
        self.months = months


def _months_of_file(
    raw_format: RawFormat, mapping: RecordMapping, store: ObjectStore, key: str, path: Path
) -> set[str]:
    """Every month the file's records fall in (a decode pass, only when a partition is missing)."""
    assert raw_format.month_of is not None
    months: set[str] = set()
    with ExitStack() as cleanup:
        source: Any = cleanup.enter_context(store.open_reader(key)) if raw_format.streamed else path
        for _entry, _line, raw in raw_format.records(source):
            try:
                month = raw_format.month_of(mapping.decode(raw))
            except (ValueError, TypeError):
                continue
            if month:
                months.add(month)
    return months


def _month_dates(months: set[str]) -> list[date]:
    dates = []
    for month in months:
        try:
            dates.append(date(int(month[:4]), int(month[5:7]), 1))
        except ValueError:
            continue
    return dates


def _unlock(conn: psycopg.Connection, key: str) -> None:
    try:
        unlock_key(conn, key)
    except psycopg.Error:  # a broken session has lost its locks anyway
        log.warning("%s: could not release the key lock (the session is gone)", key)


def _as_load_error(key: str, exc: BaseException) -> BaseException:
    """The exception a failed load raises: a LoadError naming the file (see `as_load_error`);
    an interrupt (not an Exception) goes on as it is."""
    if not isinstance(exc, Exception):
        return exc
    return as_load_error(key, exc)


AFTER_COMMIT_ATTEMPTS = 3


def _after_commit(repo: Repository, raw_format: RawFormat, result: LoadResult) -> None:
    """Work after a committed load: logged and retried on its own; a failure never fails the
    load (it is recorded in the journal's details)."""
    if raw_format.after_commit is None:
        return
    for attempt in range(1, AFTER_COMMIT_ATTEMPTS + 1):
        try:
            with repo.connection() as conn:
                raw_format.after_commit(conn, result)
            return
        except Exception as exc:  # noqa: BLE001 - the data are committed whatever happens here
            log.warning(
                "%s: after-commit step failed (attempt %d of %d): %s",
                result.key,
                attempt,
                AFTER_COMMIT_ATTEMPTS,
                exc,
            )
            if attempt == AFTER_COMMIT_ATTEMPTS:
                _note_after_commit_failure(repo, result, exc)
                return
            time.sleep(0.2 * attempt)


def _note_after_commit_failure(repo: Repository, result: LoadResult, exc: Exception) -> None:
    try:
        with repo.transaction() as conn:
            conn.execute(
                "UPDATE load_log SET details = details || jsonb_build_object("
                "'after_commit_error', %s::text) WHERE id = %s",
                (str(exc)[:2000], result.attempt_id),
            )
    except psycopg.Error:
        log.exception("%s: could not note the after-commit failure in load_log", result.key)


class _Batches:
    """The batch being filled, handed to the writer when full; rejects; progress in the log.

    Counts go straight into the load's result (records read so far, rejected), so a load
    that fails part-way journals how far it got.
    """

    def __init__(
        self,
        submit: Callable[[_Batch], None],
        encoding: str,
        mapping: RecordMapping,
        key: str,
        batch_size: int,
        result: LoadResult,
    ) -> None:
        self.send, self.encoding = submit, encoding
        self.mapping, self.key, self.result = mapping, key, result
        self.batch_size = batch_size
        self.batch = _Batch(mapping.tables)
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
            self.batch = _Batch(self.mapping.tables)

    def reject(self, where: tuple[str, int], raw: Any, exc: Exception) -> None:
        """Keep a record that could not be mapped: file, entry, line, reason and the record."""
        entry, line = where
        result, mapping = self.result, self.mapping
        result.rejected += 1
        if len(result.reject_reasons) < 10:
            result.reject_reasons.append(f"{entry}:{line}: {_without_value(exc)}")
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
                Reject(
                    source=self.mapping.source,
                    reason=f"{report.table}.{report.column}: {report.reason}; stored NULL",
                    s3_key=self.key,
                    record_id=checked.record_id,
                    entry=entry,
                    line=line,
                    kind="value",
                    table_name=report.table,
                    column_name=report.column,
                    value=shown(report.value),
                )
            )


def _read_into(
    batches: _Batches,
    source_file: Any,
    mapping: RecordMapping,
    raw_format: RawFormat,
    known_months: set[str] | None,
) -> None:
    """Read, decode and map every record of the file into batches handed to the writer.

    With `known_months` (the months events_part has partitions for), a record of another
    month raises _MissingPartition before its batch is sent.
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
    batches: _Batches, source_file: Any, raw_format: RawFormat, known_months: set[str] | None
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
        except Exception as exc:  # the fast path declined: the checked path decides
            if map_checked is None:
                if not isinstance(exc, ValueError | TypeError):
                    raise
                batches.reject((entry, line), raw, exc)
                batches.add(1)
                continue
            try:
                checked = map_checked(raw)
            except (ValueError, TypeError, RecursionError) as refused:
                batches.reject((entry, line), raw, refused)
                batches.add(1)
                continue
            record, mapped = checked.record, checked.lines
            if checked.reports or checked.repairs:
                batches.report((entry, line), checked)
        if month_of is not None and known_months is not None:
            month = month_of(record)
            if month and month not in known_months:
                raise _MissingPartition({month})
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


def _read_chunks(batches: _Batches, source_file: Any, raw_format: RawFormat) -> None:
    """Chunk by chunk, for a single-table mapping with `line`: one call maps a whole chunk;
    a chunk holding a bad record is redone record by record to reject just that one."""
    mapping: Any = batches.mapping
    (table,) = mapping.tables
    assert raw_format.chunks is not None
    map_checked = getattr(mapping, "map_checked", None)
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
                except Exception as exc:  # the fast path declined: the checked path decides
                    if map_checked is None:
                        if not isinstance(exc, ValueError | TypeError):
                            raise
                        batches.reject(where, raw, exc)
                        continue
                    try:
                        checked = map_checked(raw)
                    except (ValueError, TypeError, RecursionError) as refused:
                        batches.reject(where, raw, refused)
                        continue
                    lines.append(checked.lines[0][1])
                    if checked.reports or checked.repairs:
                        batches.report(where, checked)
                origins.append((entry, first + offset, 1))
        hand_over()
        batches.add(len(raws))


def _check_rejects(key: str, result: LoadResult, reject_ratio: float) -> None:
    if result.rows_read and result.rejected / result.rows_read > reject_ratio:
        sample = "; ".join(result.reject_reasons[:3])  # reasons without values
        raise LoadError(
            key,
            f"{result.rejected} of {result.rows_read} records rejected "
            f"({result.rejected / result.rows_read:.1%} > the allowed {reject_ratio:.1%}); "
            f"nothing loaded. First reasons: {sample}. Fix the mapping or raise ETL_REJECT_RATIO, "
            "then re-run the load from S3",
        )


def _journal_failure(
    repo: Repository,
    conn: psycopg.Connection,
    attempt: int,
    result: LoadResult,
    expected: Expected,
    exc: BaseException,
) -> None:
    """Complete the attempt as failed (its own transaction); never masks the real error."""
    message = str(_as_load_error(result.key, exc)) or type(exc).__name__
    completion = _completion(result, expected, error=message)
    completion.rows_inserted = {}  # nothing of a failed load is committed
    for target in (conn, None):
        try:
            if target is not None and target.broken:
                continue
            if target is not None:
                with target.transaction():
                    complete_attempt(target, attempt, completion)
            else:
                with repo.transaction() as other:
                    complete_attempt(other, attempt, completion)
            return
        except Exception:  # the database may be the thing that failed
            log.exception("could not record the failed load of %s in load_log", result.key)


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


def _expand(runs: list[tuple[str, int, int]]) -> list[tuple[str | None, int | None]]:
    """Runs of (entry, first line, count) as one (entry, line) per COPY line."""
    return [(entry, first + offset) for entry, first, count in runs for offset in range(count)]


_COPY_CONTEXT = re.compile(r"COPY \S+, line (\d+)(?:, column (\w+))?")


def _copy_line_number(error: psycopg.Error) -> int | None:
    """The COPY line PostgreSQL names in the error's context (1 = first line sent), if any."""
    match = _COPY_CONTEXT.search(error.diag.context or "")
    return int(match.group(1)) if match else None


def _copy_column(error: psycopg.Error) -> str | None:
    match = _COPY_CONTEXT.search(error.diag.context or "")
    return match.group(2) if match else None


def describe_error(error: BaseException) -> str:
    """An error as one line without row data: PostgreSQL's primary message with quoted values
    masked, the SQLSTATE, the table and column it names (never DETAIL or CONTEXT, which quote
    the row); other errors as their type and message, cut short."""
    if isinstance(error, psycopg.Error):
        diag = error.diag
        message = _mask_values(diag.message_primary or type(error).__name__)
        parts = [message]
        if diag.sqlstate:
            parts.append(f"SQLSTATE {diag.sqlstate}")
        column = diag.column_name or _copy_column(error)
        if diag.table_name:
            parts.append(f"table {diag.table_name}")
        if column:
            parts.append(f"column {column}")
        line = _copy_line_number(error)
        if line is not None:
            parts.append(f"batch line {line}")
        return f"{type(error).__name__}: " + "; ".join(parts)
    if isinstance(error, RefusedValue):
        return error.without_value()
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:300]}"


_QUOTED = re.compile(r'(\w+ )?"(?:[^"]|"")*"')
_IDENTIFIER_WORDS = frozenset(
    {"table ", "constraint ", "column ", "relation ", "encoding ", "index ", "schema ", "type "}
)


def _mask_values(message: str) -> str:
    """PostgreSQL's primary message with double-quoted values masked (`invalid input syntax
    for type bigint: "EHR-4711"`), quoted identifiers kept (`table "events_part"`)."""

    def mask(match: re.Match[str]) -> str:
        word = match.group(1) or ""
        return match.group(0) if word in _IDENTIFIER_WORDS else f'{word}"…"'

    return _QUOTED.sub(mask, message)


_RETRYABLE_STATES = ("08", "40", "53", "55P03", "57P", "57014", "58")
"""SQLSTATE prefixes worth a retry: connection, transaction rollback (deadlock, serialization),
insufficient resources, lock not available, operator intervention/shutdown, query canceled
(statement timeout), system error."""


def is_retryable(error: BaseException) -> bool:
    """Whether running the load again may succeed: the database or the object store was
    unreachable, a deadlock, a serialization failure, a timeout — not bad data."""
    if isinstance(error, LoadError):
        return error.retryable
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        if state:
            return state.startswith(_RETRYABLE_STATES)
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(error, ObjectReadError | ConnectionError | TimeoutError)


def as_load_error(key: str, error: BaseException) -> LoadError:
    """Any exception of a load as a LoadError naming the file, honest about `retryable`, with
    no row data in its message."""
    if isinstance(error, LoadError):
        return error
    if isinstance(error, CorruptFile):
        return LoadError(key, f"corrupt file, nothing loaded: {_first_line(error)}")
    if isinstance(error, PartitionUnavailable):
        return LoadError(key, f"nothing loaded: {_first_line(error)}", retryable=True)
    retryable = is_retryable(error)
    if isinstance(error, ObjectReadError):
        return LoadError(key, f"nothing loaded: {_first_line(error)}", retryable=True)
    if isinstance(error, psycopg.Error):
        what = "database unavailable" if retryable else "the database refused the load"
        return LoadError(
            key, f"{what}, nothing loaded: {describe_error(error)}", retryable=retryable
        )
    return LoadError(key, f"nothing loaded: {describe_error(error)}", retryable=retryable)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0][:500] if text else type(error).__name__


def _without_value(error: BaseException) -> str:
    """A reject's reason for logs and load_log.error: the column and why, not the value."""
    if isinstance(error, RefusedValue):
        return error.without_value()
    cast_field, reason = getattr(error, "field", None), getattr(error, "reason", None)
    if cast_field is not None and reason is not None:
        return f"field {cast_field}: {reason}"
    return _first_line(error)[:200]
