"""The user-properties ETL: raw user properties → permanent and changeable rows, resumably.

Two sources share one batch writer:

- `tmp_table` (default): pending `tmp_user_properties` rows (`migrated = false`),
  optionally within `since`/`until`, read in `(event_time, uuid)` order by keyset
  pagination, `batch_size` rows at a time.
- `s3`: the events of a raw Amplitude archive (ZIP of gzip NDJSON) or of an
  NDJSON file (optionally gzip) in S3; `start_after` skips lines already done.

Each batch is one transaction: permanent rows (first wins), changeable rows
(only where a person's state changed), rejects, and — for `tmp_table` —
`migrated = true` on exactly the rows that converted. A crash leaves every batch
applied and marked, or not at all; a re-run continues with no gap and no duplicate.

The tables are a function of the set of migrated events, not of the order they
arrived in (docs/user-properties.md): a person's permanent row is their earliest
event's (by `event_time`, then `uuid`) and their changeable history has a row for
each event whose state differs from the event before it. Pending rows later than
every migrated row are appended in order; a person with a pending row at or before
the newest migrated one ("late", e.g. a backfill or a retried load) is re-derived
from that row on, over their migrated and pending events, in one transaction.

The pieces live beside this module: `user_properties_batches` (a batch's rows, rejects and
value reports, written through `dwh.load_journal`), `user_properties_copy` (changeable rows
COPY'd straight into the table until a conflict), `user_properties_state` (the bounded
caches), `user_properties_rederive` (late rows), `user_properties_result`, and `gc_pause`
(the garbage collector paused during the run); the SQL is in `dwh.user_properties_queries`,
the S3 line reader in `sources.event_lines`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg

from dwh_helper.config import EtlSettings
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.user_properties_queries import (
    RunInProgress,
    has_record_rejects,
    iter_pending,
    newest_migrated_time,
    run_lock,
)
from dwh_helper.pipeline.batch_writer import BatchWriter
from dwh_helper.pipeline.gc_pause import CollectionPause, gc_paused
from dwh_helper.pipeline.user_properties_batches import (
    REJECT_SOURCE,
    Batch,
    Job,
    RecordReject,
    commit_job,
    count_errors,
    prepare,
    record_batch,
    write_batch,
)
from dwh_helper.pipeline.user_properties_copy import ChangeableCopy
from dwh_helper.pipeline.user_properties_rederive import rederive
from dwh_helper.pipeline.user_properties_result import MigrationInterrupted, MigrationResult
from dwh_helper.pipeline.user_properties_state import (
    KnownFirsts,
    LatePeople,
    LatestStates,
    PropertiesCache,
)
from dwh_helper.sources.event_lines import EventLine, LinesUnreadable, iter_event_lines
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform import values
from dwh_helper.transform.deep_fields import drop_deep_fields
from dwh_helper.transform.field_mapping import FieldMappings, load_field_mappings
from dwh_helper.transform.user_properties import (
    FieldError,
    TransformResult,
    default_mapping,
    transform_record,
)

__all__ = [
    "REJECT_SOURCE",
    "LatestStates",
    "MigrationInterrupted",
    "MigrationResult",
    "RunInProgress",
    "Source",
    "migrate_user_properties",
]

log = logging.getLogger(__name__)

Source = Literal["tmp_table", "s3"]


def migrate_user_properties(
    repo: Repository,
    *,
    source: Source = "tmp_table",
    since: date | datetime | str | None = None,
    until: date | datetime | str | None = None,
    batch_size: int = 5000,
    strict: bool = False,
    mapping: FieldMappings | Path | str | None = None,
    store: ObjectStore | None = None,
    key: str | None = None,
    start_after: int | None = None,
    reader: psycopg.Connection | None = None,
    optimistic_copy: bool | None = None,
) -> MigrationResult:
    """Turn raw user properties into permanent and changeable rows, batch by batch.

    `since`/`until` (tmp_table): a date is a whole UTC day, `until` inclusive; a
    datetime is an exact bound (`until` exclusive; naive means UTC). `key`/`store`/`start_after`
    (s3): the object to read and the last line already done. `reader` (tmp_table): a second
    autocommit connection to the same database (from the hook or a pool) to read the next
    batch on while the previous one is written; without it a pooled repository lends one,
    else everything runs in line. `optimistic_copy` (default `ETL_OPTIMISTIC_COPY`): COPY
    each batch's changeable rows straight into the table until the first conflict
    (`user_properties_copy`); False: always through staging. Raises `MigrationInterrupted`
    (carrying the partial result) when a batch fails; every batch committed before it stays
    committed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if source not in ("tmp_table", "s3"):
        raise ValueError(f"unknown source {source!r}; use 'tmp_table' or 's3'")
    rules = _resolve_mapping(mapping)
    if optimistic_copy is None:
        optimistic_copy = EtlSettings().optimistic_copy
    changeable_copy = ChangeableCopy(optimistic_copy)
    lower, upper = time_bounds(since, until)
    result = MigrationResult(
        source=source,
        since=lower.isoformat() if lower else None,
        until=upper.isoformat() if upper else None,
    )
    started = time.monotonic()
    with repo.connection() as lock_conn, run_lock(lock_conn), gc_paused() as pause:
        try:
            if source == "tmp_table":
                _run_tmp_table(
                    repo, reader, lock_conn, rules, strict, batch_size, lower, upper, result,
                    changeable_copy, pause,
                )  # fmt: skip
            else:
                if store is None or not key:
                    raise ValueError("source 's3' needs `store` (an ObjectStore) and `key`")
                if start_after is not None and start_after < 0:
                    raise ValueError(f"start_after must be 0 or more, got {start_after}")
                result.key = key
                result.start_after = start_after
                _run_s3(
                    repo, rules, strict, batch_size, store, key, start_after or 0, result,
                    changeable_copy, pause,
                )  # fmt: skip
        except MigrationInterrupted as exc:
            exc.result.seconds = time.monotonic() - started
            log.error("%s", exc.result.summary())
            raise
    result.seconds = time.monotonic() - started
    log.info("%s", result.summary())
    return result


def _resolve_mapping(mapping: FieldMappings | Path | str | None) -> FieldMappings:
    if mapping is None:
        return default_mapping()
    if isinstance(mapping, FieldMappings):
        return mapping
    return load_field_mappings(mapping)


def _bound(value: date | datetime | str | None, name: str) -> datetime | date | None:
    """A `since`/`until` argument read: None (no bound), a date or a datetime in naive UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a date (YYYY-MM-DD) or an ISO timestamp, got {value!r}"
            ) from None
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return value


def time_bounds(
    since: date | datetime | str | None, until: date | datetime | str | None
) -> tuple[datetime | None, datetime | None]:
    """[lower, upper) in naive UTC: a date `since` starts that day, a date `until` includes
    that whole day."""
    first, last = _bound(since, "since"), _bound(until, "until")
    lower = upper = None
    if first is not None:
        lower = (
            first if isinstance(first, datetime) else datetime.combine(first, datetime.min.time())
        )
    if isinstance(last, datetime):
        upper = last
    elif last is not None and last != date.max:  # date.max: the whole last day, no bound
        upper = datetime.combine(last + timedelta(days=1), datetime.min.time())
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(f"since ({since}) must be before until ({until})")
    return lower, upper


# --------------------------------------------------------------------------- source: tmp_table


@contextmanager
def _read_connection(
    repo: Repository, reader: psycopg.Connection | None, lock_conn: psycopg.Connection
) -> Iterator[tuple[psycopg.Connection, AbstractContextManager[Any]]]:
    """(the connection to read on, the turn reads and batch writes take on it): the handed-in
    reader or another connection of the repository's pool (no turn: reads overlap writes),
    else the repository's own connection, taken in turns — one query or one batch's
    transaction at a time — so that converting the next batch still overlaps writing one."""
    if reader is not None:
        yield reader, nullcontext()
        return
    with repo.connection() as other:
        yield other, threading.Lock() if other is lock_conn else nullcontext()


def _in_turn(
    pages: Iterator[list[dict[str, Any]]], turn: AbstractContextManager[Any]
) -> Iterator[list[dict[str, Any]]]:
    """Each page of `pages` read while holding `turn`."""
    while True:
        with turn:
            rows = next(pages, None)
        if rows is None:
            return
        yield rows


def _convert_tmp_rows(
    rows: list[dict[str, Any]],
    cache: PropertiesCache,
    result: MigrationResult,
    unknown: Counter[str],
) -> Batch:
    batch = Batch()
    for row in rows:
        converted = cache.convert(row)
        if converted.unknown_keys:
            unknown.update(converted.unknown_keys)
        if converted.errors:
            batch.rejects.append(RecordReject(str(row["uuid"]), converted.errors))
            count_errors(result, converted.errors)
        else:
            batch.converted.append(converted)
    return batch


def _run_tmp_table(
    repo: Repository,
    reader: psycopg.Connection | None,
    lock_conn: psycopg.Connection,
    rules: FieldMappings,
    strict: bool,
    batch_size: int,
    lower: datetime | None,
    upper: datetime | None,
    result: MigrationResult,
    changeable_copy: ChangeableCopy,
    pause: CollectionPause,
) -> None:
    unknown: Counter[str] = Counter()
    phases = ["timed"] + (["untimed"] if lower is None and upper is None else [])
    try:
        with _read_connection(repo, reader, lock_conn) as (read_on, turn):
            clear_old = has_record_rejects(read_on, REJECT_SOURCE)
            capacity = max(100_000, 3 * batch_size)
            latest = LatestStates(Repository(read_on), capacity=capacity)
            known = KnownFirsts(capacity)
            cache = PropertiesCache(rules, strict)
            late = LatePeople(newest_migrated_time(read_on))

            def write(job: Job) -> None:
                with turn:
                    commit_job(repo, result, job, changeable_copy)

            with BatchWriter(write, name="user-properties-writer") as writer:
                for phase in phases:
                    pages = iter_pending(read_on, phase, lower, upper, batch_size)
                    for rows in _in_turn(pages, turn):
                        batch = _convert_tmp_rows(rows, cache, result, unknown)
                        batch.converted = late.hold_back(batch.converted)
                        with turn:  # the people's latest states are read here
                            job = prepare(
                                batch,
                                latest,
                                known,
                                migrated=[item.changeable["uuid"] for item in batch.converted],
                                clear_rejects=[str(row["uuid"]) for row in rows]
                                if clear_old
                                else (),
                                rows_read=len(rows),
                                up_to=rows[-1]["event_time"],
                            )
                        writer.submit(job)
                        pause.tick(len(rows))
            if late.cuts:
                rederive(repo, late.cuts, cache, lower, upper, batch_size, result)
    except Exception as exc:
        raise result.interrupted(
            exc,
            unknown,
            f"user-properties run interrupted in batch {result.batches + 1} "
            f"({result.batches} batches committed, {result.processed} rows processed)",
            "run again to continue where it stopped",
        ) from exc
    result.unknown_keys = dict(unknown)


# --------------------------------------------------------------------------- source: s3


_DEEP_PROPERTIES = "user_properties"


def _decode_event(data: bytes) -> tuple[Any, dict[str, str]]:
    """A raw line decoded, and its top-level fields too deeply nested to read (each replaced
    by null, with the reason): a deep field the ETL does not read costs nothing."""
    try:
        return json.loads(data), {}
    except RecursionError:
        pass
    text, unreadable = drop_deep_fields(data.decode("utf-8", "surrogateescape"))
    return values.parse_json(text), unreadable


def _reject_line(batch: Batch, result: MigrationResult, line: EventLine, error: FieldError) -> None:
    batch.rejects.append(RecordReject(None, [error], line.entry, line.index))
    count_errors(result, [error])


def _convert_line(
    line: EventLine,
    rules: FieldMappings,
    strict: bool,
    batch: Batch,
    result: MigrationResult,
    unknown: Counter[str],
) -> None:
    try:
        event, unreadable = _decode_event(line.data)
    except ValueError as exc:  # InvalidValue too
        reason = exc.reason if isinstance(exc, values.InvalidValue) else f"not JSON: {exc}"
        text = line.data[:200].decode("utf-8", "replace")
        _reject_line(batch, result, line, FieldError("<line>", text, reason))
        return
    if not isinstance(event, dict):
        _reject_line(
            batch, result, line, FieldError("<line>", event, "not a JSON object (an event)")
        )
        return
    if _DEEP_PROPERTIES in unreadable:  # the person cannot be read: the record's key
        reason = f"{_DEEP_PROPERTIES}: {unreadable[_DEEP_PROPERTIES]}"
        error = FieldError(_DEEP_PROPERTIES, "<not read>", reason, _DEEP_PROPERTIES)
        converted = TransformResult(None, None, [error])
    else:
        converted = transform_record(event, rules, strict)
    if converted.unknown_keys:
        unknown.update(converted.unknown_keys)
    if converted.errors:
        record_id = event.get("uuid")
        batch.rejects.append(
            RecordReject(
                values.shown(record_id) if record_id is not None else None,
                converted.errors,
                line.entry,
                line.index,
                {"entry_line": line.entry_line, "event": event},
            )
        )
        count_errors(result, converted.errors)
    else:
        batch.converted.append(converted)
        batch.places.append((line.entry, line.index))


def _run_s3(
    repo: Repository,
    rules: FieldMappings,
    strict: bool,
    batch_size: int,
    store: ObjectStore,
    key: str,
    start_after: int,
    result: MigrationResult,
    changeable_copy: ChangeableCopy,
    pause: CollectionPause,
) -> None:
    unknown: Counter[str] = Counter()
    capacity = max(100_000, 3 * batch_size)
    latest = LatestStates(repo, capacity=capacity)
    known = KnownFirsts(capacity)
    result.last_line = start_after
    with tempfile.TemporaryDirectory(prefix="dwh-user-properties-") as workdir:
        path = store.download_file(key, Path(workdir) / "raw")
        lines = iter_event_lines(path)
        failed_line: int | None = None
        try:
            done = False
            while not done:
                batch = Batch()
                started = time.monotonic()
                read_error: LinesUnreadable | None = None
                try:
                    for line in lines:
                        if line.index <= start_after:
                            continue
                        if batch.first_line is None:
                            batch.first_line = line.index
                        batch.last_line = line.index
                        _convert_line(line, rules, strict, batch, result, unknown)
                        if line.index - batch.first_line + 1 >= batch_size:
                            break
                    else:
                        done = True
                except LinesUnreadable as exc:
                    read_error = exc
                if batch.first_line is not None:
                    failed_line = batch.first_line
                    job = prepare(batch, latest, known)
                    with repo.transaction():
                        written = write_batch(
                            repo, job, s3_key=key, changeable_copy=changeable_copy
                        )
                    record_batch(result, batch, written)
                    result.last_line = batch.last_line
                    pause.tick(batch.last_line - batch.first_line + 1)
                    log.info(
                        "batch %d: lines %d-%d of s3 key %s, %d processed, %d rejected, "
                        "%d values nulled, %d permanent and %d changeable inserted in %.2fs",
                        result.batches,
                        batch.first_line,
                        batch.last_line,
                        key,
                        len(batch.converted),
                        len(batch.rejects),
                        written.nulled,
                        written.permanent,
                        written.changeable,
                        time.monotonic() - started,
                    )
                if read_error is not None:
                    failed_line = max(read_error.index, (result.last_line or 0) + 1)
                    raise read_error.cause
        except Exception as exc:
            result.failed_line = failed_line
            raise result.interrupted(
                exc,
                unknown,
                f"user-properties run over s3 key {key} interrupted at line {failed_line}",
                f"lines up to {result.last_line} are done, "
                f"run again with start_after={result.last_line}",
            ) from exc
    result.unknown_keys = dict(unknown)
