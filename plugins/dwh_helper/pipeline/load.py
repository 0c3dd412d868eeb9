"""Load one raw file from S3 into the DWH: stream, parse, map, COPY — one transaction per file.

The reader (`load_batches`) decodes and maps records into COPY text; a `BatchWriter` thread
ships each finished batch to PostgreSQL (`table_writer`). Python's work on batch N+1 overlaps
the server's work on batch N, and at most three batches exist at a time (one being written,
one queued, one being filled), so memory stays flat whatever the file's size. The cyclic
garbage collector is paused while the file is read (`gc_pause`): in an Airflow worker its
automatic passes over the worker's objects cost the reader 15% (docs/benchmarks.md). This module
runs a file's lifecycle: journal, key lock, verification, passes, after-commit work.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg

from dwh_helper.config import EtlSettings
from dwh_helper.dwh.load_log import (
    Completion,
    complete_attempt,
    loaded_before,
    loaded_since,
    lock_key,
    mark_abandoned,
    note_details,
    start_attempt,
    unlock_key,
)
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.schema import create_month_partitions, month_partitions
from dwh_helper.pipeline.batch_writer import BatchWriter
from dwh_helper.pipeline.gc_pause import CollectionPause, gc_paused
from dwh_helper.pipeline.load_batches import Batch, Batches, MissingPartition, read_into
from dwh_helper.pipeline.load_errors import (
    CorruptFile,
    LoadError,
    as_load_error,
    describe_error,
    is_retryable,
)
from dwh_helper.pipeline.load_model import (
    DEFAULT_BATCH_SIZE,
    LoadResult,
    RawFormat,
    RecordMapping,
    TargetTable,
)
from dwh_helper.pipeline.table_writer import TableWriter
from dwh_helper.pipeline.temp_files import load_temp_dir
from dwh_helper.pipeline.verify import (
    Expected,
    HashingReader,
    ObjectMismatch,
    check_digest,
    check_size,
    copy_hashing,
)
from dwh_helper.storage.s3 import ObjectInfo, ObjectStore

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "CorruptFile",
    "LoadError",
    "LoadResult",
    "RawFormat",
    "RecordMapping",
    "TargetTable",
    "as_load_error",
    "describe_error",
    "is_retryable",
    "load_raw_file",
]

log = logging.getLogger(__name__)


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
    optimistic_copy: bool | None = None,
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
    Batches are COPY'd straight into their tables while nothing conflicts (`optimistic_copy`,
    default `ETL_OPTIMISTIC_COPY`; see `table_writer`); a `reload`, a key the journal has
    seen loaded before and a pass after a deadlock go through staging from the start. A
    `reload` and a key loaded before also skip present rows on their key before PostgreSQL
    reads their other values (and so does the rest of a file once a conflict is met).
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
            if optimistic_copy is None:
                optimistic_copy = EtlSettings().optimistic_copy
            seen_before = reload or loaded_before(conn, key, attempt)
            load = _Load(store, key, pinned, conn, mapping, raw_format, expected, result,
                         batch_size, reject_ratio, attempt, started, seen_before)  # fmt: skip
            _load_verified(load, info, temp_dir, optimistic_copy and not seen_before)
        except BaseException as exc:
            _journal_failure(repo, conn, attempt, result, expected, exc)
            raise _as_load_error(key, exc) from exc
        finally:
            if locked:
                _unlock(conn, key)
    _after_commit(repo, raw_format, result)
    return result


@dataclass(frozen=True)
class _Load:
    """What one load reads, into what and how: the same for every pass over the file."""

    store: ObjectStore
    key: str
    repo: Repository  # pinned to `conn`
    conn: psycopg.Connection
    mapping: RecordMapping
    raw_format: RawFormat
    expected: Expected
    result: LoadResult
    batch_size: int
    reject_ratio: float
    attempt: int
    started: float
    seen_before: bool
    """A re-load, or a key the journal has seen loaded: most rows are expected present."""


def _load_verified(load: _Load, info: ObjectInfo, temp_dir: Path | None, optimistic: bool) -> None:
    """Check, read and load the object in one data transaction that also completes the journal."""
    key, result, conn, raw_format = load.key, load.result, load.conn, load.raw_format
    if not load.expected.recorded:
        log.warning(
            "%s: no size/SHA-256 in the object's metadata (landed by hand?): loading it "
            "unverified (load_log.verified is NULL)",
            key,
        )
    try:
        check_size(load.expected, info.size)
    except ObjectMismatch as exc:
        result.bytes = info.size
        raise LoadError(key, str(exc)) from exc
    with load_temp_dir(temp_dir) as tmp:
        known: set[str] | None = None
        if raw_format.month_of is not None:
            known = month_partitions(conn)
        path = tmp / Path(key).name
        if not raw_format.streamed:
            with load.store.open_reader(key) as body, path.open("wb") as out:
                result.bytes, result.sha256 = copy_hashing(body, out)
            _verify(key, load.expected, result)
            log.info(
                "loading s3://%s/%s (%d bytes, downloaded and hashed in %.1fs)",
                load.store.bucket,
                key,
                result.bytes,
                time.perf_counter() - load.started,
            )
        for tries in range(1, PASSES + 1):
            result.reset_counts()
            try:
                _load_once(load, path, known, optimistic)
                return
            except psycopg.errors.DeadlockDetected as exc:
                # two loads of large files sharing keys across batches (say, devices) can still
                # meet in opposite orders; PostgreSQL rolled this one back: read it again
                if tries == PASSES:
                    raise
                optimistic = False  # the loads met in the tables: this one through staging
                log.warning("%s: rolled back by a deadlock (%s); loading again", key, exc)
                time.sleep(random.uniform(0.1, 1.0))
            except MissingPartition as missing:
                # the data transaction was rolled back before any row of that month was sent
                months = _months_of_file(load, path) | missing.months
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


def _load_once(load: _Load, path: Path, known: set[str] | None, optimistic: bool) -> None:
    """One pass: read, map and write in the data transaction; verify; complete the journal."""
    key, result, mapping, raw_format = load.key, load.result, load.mapping, load.raw_format
    with ExitStack() as cleanup:
        hashing: HashingReader | None = None
        if raw_format.streamed:
            hashing = HashingReader(cleanup.enter_context(load.store.open_reader(key)))
            source: Any = hashing.buffered()
            log.info("loading s3://%s/%s as it streams in", load.store.bucket, key)
        else:
            source = path
        with load.repo.transaction() as tx:
            tables = TableWriter(
                load.repo,
                tx,
                result,
                mapping.record_id,
                optimistic=optimistic,
                skip_present=load.seen_before,
            )
            with BatchWriter(tables.write) as writer, gc_paused() as pause:
                batches = Batches(
                    _ticking(writer.submit, pause),
                    tables.encoding,
                    mapping,
                    key,
                    load.batch_size,
                    result,
                )
                read_into(batches, source, mapping, raw_format, known)
            if hashing is not None:
                result.bytes, result.sha256 = hashing.finish()
                _verify(key, load.expected, result)
            _check_rejects(key, result, load.reject_ratio)
            result.details.update(getattr(mapping, "details", None) or {})
            result.seconds = time.perf_counter() - load.started
            complete_attempt(tx, load.attempt, _completion(result, load.expected))
    log.info(
        "loaded %s: %d records, %d rejected, %d value(s) stored NULL, %d repaired, inserted %s "
        "in %.1fs (%.0f records/s; %d rows COPY'd straight, the rest through staging; "
        "database busy %.1fs, reader waited %.1fs for it)",
        key,
        result.rows_read,
        result.rejected,
        result.values_nulled,
        result.values_repaired,
        result.inserted,
        result.seconds,
        result.rows_read / result.seconds if result.seconds else 0.0,
        tables.direct_rows,
        writer.busy_seconds,
        writer.wait_seconds,
    )


def _ticking(submit: Callable[[Batch], None], pause: CollectionPause) -> Callable[[Batch], None]:
    """`submit` that also tells the paused collector how many records went by."""

    def send(batch: Batch) -> None:
        submit(batch)
        pause.tick(batch.records)

    return send


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


def _months_of_file(load: _Load, path: Path) -> set[str]:
    """Every month the file's records fall in (a decode pass, only when a partition is missing)."""
    raw_format, mapping = load.raw_format, load.mapping
    assert raw_format.month_of is not None
    months: set[str] = set()
    with ExitStack() as cleanup:
        source: Any = path
        if raw_format.streamed:
            source = cleanup.enter_context(load.store.open_reader(load.key))
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
    if result.attempt_id is None:
        return
    try:
        with repo.transaction() as conn:
            note_details(conn, result.attempt_id, {"after_commit_error": str(exc)[:2000]})
    except psycopg.Error:
        log.exception("%s: could not note the after-commit failure in load_log", result.key)


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
