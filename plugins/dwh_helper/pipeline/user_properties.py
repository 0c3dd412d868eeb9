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
"""

from __future__ import annotations

import gzip
import json
import logging
import queue
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from dwh_helper.dwh.load_journal import Reject, write_rejects
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import (
    CHANGEABLE_STATE_COLUMNS,
    CHANGEABLE_USER_PROPERTIES,
    PERMANENT_USER_PROPERTIES,
)
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform.field_mapping import FieldMappings, load_field_mappings
from dwh_helper.transform.user_properties import (
    FieldError,
    PropertiesResult,
    TransformResult,
    complete_record,
    default_mapping,
    transform_properties,
    transform_record,
)

log = logging.getLogger(__name__)

Source = Literal["tmp_table", "s3"]
REJECT_SOURCE = "user_properties"
"""`load_rejects.source` of the records this step could not convert."""

_LOCK_ID = 7_461_503_505  # pg_advisory_lock key: one user-properties run at a time
_PERMANENT_COLUMNS = PERMANENT_USER_PROPERTIES.column_names
_CHANGEABLE_COLUMNS = CHANGEABLE_USER_PROPERTIES.column_names
_permanent_tuple = itemgetter(*_PERMANENT_COLUMNS)
_changeable_tuple = itemgetter(*_CHANGEABLE_COLUMNS)
_changeable_state = itemgetter(*CHANGEABLE_STATE_COLUMNS)
# The properties come as JSON text: equal texts are converted once (see _PropertiesCache).
_TMP_COLUMNS = (
    "uuid, user_properties_json::text AS user_properties_json, language, session_id, "
    "start_version, event_time"
)


class MigrationInterrupted(RuntimeError):
    """A run stopped part way; `result` says what was committed and where to resume."""

    def __init__(self, message: str, result: MigrationResult) -> None:
        super().__init__(message)
        self.result = result


class RunInProgress(RuntimeError):
    """Another user-properties run holds the lock on this database."""


@dataclass
class MigrationResult:
    """What a run did: counts, unknown keys, and (for `s3`) the lines done and the failing one."""

    source: str
    status: Literal["completed", "interrupted"] = "completed"
    processed: int = 0
    rejected: int = 0
    rejected_before: int = 0
    permanent_inserted: int = 0
    changeable_inserted: int = 0
    batches: int = 0
    rederived_people: int = 0
    unknown_keys: dict[str, int] = field(default_factory=dict)
    error_keys: dict[str, int] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None
    key: str | None = None
    start_after: int | None = None
    last_line: int | None = None
    failed_line: int | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def new_reject_ratio(self) -> float:
        """Share of this run's records rejected for the first time (repeat rejects left out)."""
        new = self.rejected - self.rejected_before
        total = self.processed + new
        return new / total if total else 0.0

    @property
    def rows_per_second(self) -> float:
        """Records (processed + rejected) per second of the run."""
        total = self.processed + self.rejected
        return total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XCom, API responses)."""
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        data["new_reject_ratio"] = round(self.new_reject_ratio, 6)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        """One log line: counts, rate, unknown keys, and where to resume."""
        text = (
            f"user properties ({self.source}) {self.status}: {self.processed} processed, "
            f"{self.rejected} rejected ({self.rejected_before} of them already before), "
            f"{self.permanent_inserted} permanent and "
            f"{self.changeable_inserted} changeable rows inserted in {self.batches} batches, "
            f"{self.rederived_people} people re-derived for late rows, "
            f"{self.seconds:.1f}s ({self.rows_per_second:.0f} rows/s)"
        )
        if self.unknown_keys:
            top = sorted(self.unknown_keys.items(), key=lambda item: (-item[1], item[0]))[:10]
            text += "; unknown keys: " + ", ".join(f"{key}={count}" for key, count in top)
        if self.key is not None:
            text += f"; s3 key {self.key}, last line {self.last_line}"
        if self.status != "completed":
            text += f"; failed at line {self.failed_line}" if self.failed_line else ""
            text += f"; error: {self.error}"
        return text


@dataclass
class _Reject:
    record_id: str | None
    errors: list[FieldError]
    entry: str | None = None
    line: int | None = None
    raw: dict[str, Any] | None = None


@dataclass
class _Batch:
    """One batch's converted records (in order) and rejects."""

    converted: list[TransformResult] = field(default_factory=list)
    rejects: list[_Reject] = field(default_factory=list)
    first_line: int | None = None
    last_line: int | None = None


# --------------------------------------------------------------------------- entry point


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
) -> MigrationResult:
    """Turn raw user properties into permanent and changeable rows, batch by batch.

    `since`/`until` (tmp_table): a date is a whole UTC day, `until` inclusive; a
    datetime is an exact bound (`until` exclusive; naive means UTC). `key`/`store`/`start_after`
    (s3): the object to read and the last line already done. Raises
    `MigrationInterrupted` (carrying the partial result) when a batch fails;
    every batch committed before it stays committed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if source not in ("tmp_table", "s3"):
        raise ValueError(f"unknown source {source!r}; use 'tmp_table' or 's3'")
    rules = _resolve_mapping(mapping)
    lower, upper = _time_bounds(since, until)
    result = MigrationResult(
        source=source,
        since=lower.isoformat() if lower else None,
        until=upper.isoformat() if upper else None,
    )
    started = time.monotonic()
    with _run_lock(repo) as lock_conn:
        try:
            if source == "tmp_table":
                _run_tmp_table(repo, lock_conn, rules, strict, batch_size, lower, upper, result)
            else:
                if store is None or not key:
                    raise ValueError("source 's3' needs `store` (an ObjectStore) and `key`")
                if start_after is not None and start_after < 0:
                    raise ValueError(f"start_after must be 0 or more, got {start_after}")
                result.key = key
                result.start_after = start_after
                _run_s3(repo, rules, strict, batch_size, store, key, start_after or 0, result)
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


def _as_datetime(value: date | datetime | str, name: str) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name} must be a date (YYYY-MM-DD) or an ISO timestamp, got {value!r}"
        ) from None


def _time_bounds(
    since: date | datetime | str | None, until: date | datetime | str | None
) -> tuple[datetime | None, datetime | None]:
    """[lower, upper) in naive UTC: a date `until` includes that whole day."""
    lower = upper = None
    if since not in (None, ""):
        value = _as_datetime(since, "since")  # type: ignore[arg-type]
        lower = (
            value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time())
        )
    if until not in (None, ""):
        value = _as_datetime(until, "until")  # type: ignore[arg-type]
        if isinstance(value, datetime):
            upper = value
        elif value == date.max:  # the whole last day: no upper bound (date.max + 1 day overflows)
            upper = None
        else:
            upper = datetime.combine(value + timedelta(days=1), datetime.min.time())
    if lower is not None and lower.tzinfo is not None:
        lower = lower.astimezone(UTC).replace(tzinfo=None)
    if upper is not None and upper.tzinfo is not None:
        upper = upper.astimezone(UTC).replace(tzinfo=None)
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(f"since ({since}) must be before until ({until})")
    return lower, upper


@contextmanager
def _run_lock(repo: Repository) -> Iterator[psycopg.Connection]:
    """Hold a session advisory lock so two runs never interleave their batches."""
    with repo.connection() as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,)).fetchone()
        if not got or not got[0]:
            raise RunInProgress(
                "another user-properties run is in progress on this database; "
                "wait for it to finish (or end its session) and run again"
            )
        try:
            yield conn
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            except psycopg.Error:
                log.warning("could not release the user-properties run lock (connection lost)")


# --------------------------------------------------------------------------- the batch writer


def _count_errors(result: MigrationResult, errors: Sequence[FieldError]) -> None:
    for key in {error.key for error in errors}:
        result.error_keys[key] = result.error_keys.get(key, 0) + 1


def _clean_json(value: Any) -> Any:
    """JSON safe for jsonb (PostgreSQL refuses the NUL character in jsonb strings)."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000") if "\x00" in value else value
    if isinstance(value, dict):
        return {_clean_json(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return repr(value)


def _reject_rows(rejects: list[_Reject], key: str | None) -> list[Reject]:
    rows = []
    for reject in rejects:
        reason = "; ".join(str(error) for error in reject.errors)
        raw = {"errors": [error.as_dict() for error in reject.errors]}
        if reject.raw is not None:
            raw.update(reject.raw)
        rows.append(
            Reject(
                source=REJECT_SOURCE,
                reason=reason.replace("\x00", "\\x00"),
                s3_key=key,
                record_id=reject.record_id,
                entry=reject.entry,
                line=reject.line,
                raw=_clean_json(raw),
            )
        )
    return rows


class LatestStates:
    """Each person's latest changeable state during a run: the database's, then the run's own.

    People are looked up in the database once (in bulk, per batch) and then
    followed in memory as the run writes their rows. At most `capacity` people
    are kept (the least recently written are dropped and looked up again if
    they come back), so memory stays bounded whatever the number of rows.
    """

    _NONE = object()

    def __init__(self, repo: Repository, capacity: int = 100_000) -> None:
        self.repo = repo
        self.capacity = capacity
        self._states: dict[int | None, Any] = {}

    def load(self, people: set[int | None]) -> None:
        """Fetch from the database the people this run has not seen yet."""
        missing = [person for person in people if person not in self._states]
        if not missing:
            return
        found = self.repo.latest_changeable(missing)
        for person in missing:
            row = found.get(person)
            self._states[person] = _changeable_state(row) if row is not None else self._NONE
        self._trim(keep=people)

    def changed(self, person: int | None, state: tuple[Any, ...]) -> bool:
        """True (and remember `state`) when it differs from the person's latest state."""
        if self._states.get(person) == state:
            return False
        self._states.pop(person, None)
        self._states[person] = state
        return True

    def _trim(self, keep: set[int | None]) -> None:
        """Drop the least recently written people beyond capacity, never those in `keep`."""
        excess = len(self._states) - self.capacity
        if excess <= 0:
            return
        victims = []
        for person in self._states:
            if person not in keep:
                victims.append(person)
                if len(victims) == excess:
                    break
        for person in victims:
            del self._states[person]


def _new_changeable_rows(
    latest: LatestStates, converted: list[TransformResult]
) -> list[tuple[Any, ...]]:
    """Changeable rows whose state differs from the person's latest (database, then run)."""
    latest.load({item.changeable["ehr_id"] for item in converted if item.changeable is not None})
    rows = []
    for item in converted:
        row = item.changeable
        if row is not None and latest.changed(row["ehr_id"], _changeable_state(row)):
            rows.append(_changeable_tuple(row))
    return rows


def _first_permanent_rows(converted: list[TransformResult]) -> list[tuple[Any, ...]]:
    """One permanent row per person: the batch's earliest record wins."""
    seen: dict[int, tuple[Any, ...]] = {}
    for item in converted:
        row = item.permanent
        if row is not None and row["ehr_id"] not in seen:
            seen[row["ehr_id"]] = _permanent_tuple(row)
    return list(seen.values())


@dataclass(frozen=True)
class _Written:
    permanent: int
    changeable: int
    repeated: int  # rejects of records an earlier run had rejected already


@dataclass
class _Job:
    """One batch ready to write: its rows, rejects, and the tmp rows to mark."""

    batch: _Batch
    permanent: list[tuple[Any, ...]]
    changeable: list[tuple[Any, ...]]
    migrated: Sequence[Any] = ()
    clear_rejects: Sequence[str] = ()
    rows_read: int = 0
    up_to: Any = None
    started: float = field(default_factory=time.monotonic)


def _prepare(batch: _Batch, latest: LatestStates, **extra: Any) -> _Job:
    """The rows a batch writes: first permanent row per person, changeable rows on change."""
    return _Job(
        batch,
        _first_permanent_rows(batch.converted),
        _new_changeable_rows(latest, batch.converted),
        **extra,
    )


def _write_batch(repo: Repository, job: _Job, *, s3_key: str | None = None) -> _Written:
    """Write one batch inside the caller's transaction.

    Earlier rejects of the same records are replaced, so `load_rejects` holds
    each pending record's current errors once.
    """
    batch, permanent, changeable = job.batch, job.permanent, job.changeable
    clear_rejects, migrated = job.clear_rejects, job.migrated
    permanent_inserted = repo.copy_rows(PERMANENT_USER_PROPERTIES, permanent) if permanent else 0
    changeable_inserted = (
        repo.copy_rows(CHANGEABLE_USER_PROPERTIES, changeable) if changeable else 0
    )
    repeated = 0
    with repo.connection() as conn, conn.cursor() as cursor:
        if clear_rejects:
            cursor.execute(
                "DELETE FROM load_rejects WHERE source = %s AND s3_key IS NULL "
                "AND record_id = ANY(%s) RETURNING record_id",
                (REJECT_SOURCE, list(clear_rejects)),
            )
            before = {row[0] for row in cursor.fetchall()}
            repeated = sum(reject.record_id in before for reject in batch.rejects)
        if s3_key is not None and batch.first_line is not None:
            cursor.execute(
                "DELETE FROM load_rejects WHERE source = %s AND s3_key = %s "
                "AND line BETWEEN %s AND %s RETURNING line",
                (REJECT_SOURCE, s3_key, batch.first_line, batch.last_line),
            )
            before = {row[0] for row in cursor.fetchall()}
            repeated = sum(reject.line in before for reject in batch.rejects)
        if batch.rejects:
            write_rejects(conn, _reject_rows(batch.rejects, s3_key))
    if migrated:
        repo.mark_migrated(migrated)
    return _Written(permanent_inserted, changeable_inserted, repeated)


def _record_batch(result: MigrationResult, batch: _Batch, written: _Written) -> None:
    result.batches += 1
    result.processed += len(batch.converted)
    result.rejected += len(batch.rejects)
    result.rejected_before += written.repeated
    result.permanent_inserted += written.permanent
    result.changeable_inserted += written.changeable


# --------------------------------------------------------------------------- source: tmp_table


def _pending_rows(
    conn: psycopg.Connection,
    lower: datetime | None,
    upper: datetime | None,
    after: tuple[datetime, Any] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The next pending rows in (event_time, uuid) order after `after` (keyset, never OFFSET)."""
    where = ["migrated = false", "event_time IS NOT NULL"]
    params: list[Any] = []
    if lower is not None:
        where.append("event_time >= %s")
        params.append(lower)
    if upper is not None:
        where.append("event_time < %s")
        params.append(upper)
    if after is not None:
        where.append("event_time >= %s AND (event_time, uuid) > (%s, %s)")
        params.extend([after[0], after[0], after[1]])
    params.append(limit)
    query = (
        f"SELECT {_TMP_COLUMNS} FROM tmp_user_properties WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY event_time, uuid LIMIT %s"
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchall()


def _pending_without_time(conn: psycopg.Connection, after: Any, limit: int) -> list[dict[str, Any]]:
    """Pending rows with no event_time (they can only be rejected), in uuid order."""
    query = (
        f"SELECT {_TMP_COLUMNS} FROM tmp_user_properties "  # noqa: S608
        "WHERE migrated = false AND event_time IS NULL AND (%s::uuid IS NULL OR uuid > %s) "
        "ORDER BY uuid LIMIT %s"
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, (after, after, limit)).fetchall()


def _has_old_rejects(repo: Repository) -> bool:
    with repo.connection() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM load_rejects WHERE source = %s AND s3_key IS NULL)",
            (REJECT_SOURCE,),
        ).fetchone()
    return bool(row and row[0])


class _PropertiesCache:
    """Converted user_properties by their JSON text: a person's events mostly repeat them.

    Bounded: emptied once it holds `capacity` distinct texts.
    """

    def __init__(self, rules: FieldMappings, strict: bool, capacity: int = 5_000) -> None:
        self.rules = rules
        self.strict = strict
        self.capacity = capacity
        self._results: dict[Any, PropertiesResult] = {}

    def convert(self, row: Mapping[str, Any]) -> TransformResult:
        """The record's rows, reusing the conversion of properties seen before."""
        text = row["user_properties_json"]
        properties = self._results.get(text) if isinstance(text, str) else None
        if properties is None:
            properties = transform_properties(
                text, self.rules, self.strict, key="user_properties_json"
            )
            if isinstance(text, str):
                if len(self._results) >= self.capacity:
                    self._results.clear()
                self._results[text] = properties
        return complete_record(row, properties, self.rules)


def _convert_tmp_rows(
    rows: list[dict[str, Any]],
    cache: _PropertiesCache,
    result: MigrationResult,
    unknown: Counter[str],
) -> tuple[_Batch, list[Any]]:
    batch = _Batch()
    done: list[Any] = []
    for row in rows:
        converted = cache.convert(row)
        if converted.unknown_keys:
            unknown.update(converted.unknown_keys)
        if converted.errors:
            batch.rejects.append(_Reject(str(row["uuid"]), converted.errors))
            _count_errors(result, converted.errors)
        else:
            batch.converted.append(converted)
            done.append(row["uuid"])
    return batch, done


def _iter_pending(
    conn: psycopg.Connection,
    phase: str,
    lower: datetime | None,
    upper: datetime | None,
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Pending rows batch by batch (keyset pagination), read on `conn`."""
    after: Any = None
    while True:
        if phase == "timed":
            rows = _pending_rows(conn, lower, upper, after, batch_size)
        else:
            rows = _pending_without_time(conn, after, batch_size)
        if not rows:
            return
        yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1]
        after = (last["event_time"], last["uuid"]) if phase == "timed" else last["uuid"]


_DONE = object()


class _Writer:
    """Writes prepared batches in order, each in its own transaction, on `repo`'s connection.

    Threaded, it writes batch N while the caller reads and converts batch N+1
    on a second connection (at most one batch waits). A failed batch stops the
    writer: later batches are never written, and the error is raised to the
    caller at its next `submit` or at `close`.
    """

    def __init__(self, repo: Repository, result: MigrationResult, threaded: bool) -> None:
        self.repo = repo
        self.result = result
        self.error: BaseException | None = None
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(
                target=self._work, name="user-properties-writer", daemon=True
            )
            self._thread.start()

    def submit(self, job: _Job) -> None:
        """Write `job` (threaded: queue it); raises the error of an earlier failed batch."""
        if self._thread is None:
            self._write(job)
            return
        while True:
            self._raise_failure()
            try:
                self._jobs.put(job, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait for every queued batch to be written; raises the writer's error if any."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._jobs.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._thread = None
        self._raise_failure()

    def abandon(self) -> None:
        """Stop after the batch in progress (the caller failed); nothing queued is written."""
        if self._thread is not None:
            while True:
                try:
                    self._jobs.get_nowait()
                except queue.Empty:
                    break
            self._jobs.put(_DONE)
            self._thread.join()
            self._thread = None

    def _raise_failure(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _DONE:
                return
            try:
                self._write(job)
            except BaseException as exc:  # re-raised in the caller's thread
                self.error = exc
                return

    def _write(self, job: _Job) -> None:
        with self.repo.transaction():
            written = _write_batch(self.repo, job)
        _record_batch(self.result, job.batch, written)
        log.info(
            "batch %d: %d rows up to %s, %d processed, %d rejected, %d permanent "
            "and %d changeable inserted in %.2fs",
            self.result.batches,
            job.rows_read,
            job.up_to,
            len(job.batch.converted),
            len(job.batch.rejects),
            written.permanent,
            written.changeable,
            time.monotonic() - job.started,
        )


@contextmanager
def _second_connection(lock_conn: psycopg.Connection) -> Iterator[psycopg.Connection | None]:
    """A second autocommit connection to the same database (None when it cannot be opened)."""
    try:
        conn = psycopg.connect(
            lock_conn.info.dsn, password=lock_conn.info.password or None, autocommit=True
        )
    except psycopg.Error as exc:
        log.info("writing in line (no second connection: %s)", _describe_error(exc))
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def _run_tmp_table(
    repo: Repository,
    lock_conn: psycopg.Connection,
    rules: FieldMappings,
    strict: bool,
    batch_size: int,
    lower: datetime | None,
    upper: datetime | None,
    result: MigrationResult,
) -> None:
    clear_old = _has_old_rejects(repo)
    unknown: Counter[str] = Counter()
    phases = ["timed"] + (["untimed"] if lower is None and upper is None else [])
    try:
        with _second_connection(lock_conn) as reader, repo.connection() as own:
            read_on = reader if reader is not None else own
            latest = LatestStates(Repository(read_on), capacity=max(100_000, 3 * batch_size))
            cache = _PropertiesCache(rules, strict)
            writer = _Writer(repo, result, threaded=reader is not None)
            late = _LatePeople(_newest_migrated_time(read_on))
            try:
                for phase in phases:
                    for rows in _iter_pending(read_on, phase, lower, upper, batch_size):
                        batch, done = _convert_tmp_rows(rows, cache, result, unknown)
                        done = late.hold_back(batch, done)
                        writer.submit(
                            _prepare(
                                batch,
                                latest,
                                migrated=done,
                                clear_rejects=[str(row["uuid"]) for row in rows]
                                if clear_old
                                else (),
                                rows_read=len(rows),
                                up_to=rows[-1]["event_time"],
                            )
                        )
                writer.close()
            except BaseException:
                writer.abandon()
                raise
            if late.cuts:
                _rederive(repo, late.cuts, cache, lower, upper, batch_size, result)
    except Exception as exc:
        result.status = "interrupted"
        result.error = _describe_error(exc)
        result.unknown_keys = dict(unknown)
        raise MigrationInterrupted(
            f"user-properties run interrupted in batch {result.batches + 1} "
            f"({result.batches} batches committed, {result.processed} rows processed): "
            f"{result.error}; run again to continue where it stopped",
            result,
        ) from exc
    result.unknown_keys = dict(unknown)


class _LatePeople:
    """People with a pending row at or before the newest migrated row, and where each one's
    history must be re-derived from (their earliest such row's event time).

    Pending rows come in (event_time, uuid) order, so a person's first row seen is their
    earliest; every later row of a late person is held back too.
    """

    def __init__(self, newest_migrated: datetime | None) -> None:
        self.newest_migrated = newest_migrated
        self.cuts: dict[int | None, datetime] = {}

    def hold_back(self, batch: _Batch, done: list[Any]) -> list[Any]:
        """Drop late people's rows from `batch` (they are re-derived later); the rows to mark."""
        if self.newest_migrated is None:
            return done
        kept: list[TransformResult] = []
        for item in batch.converted:
            row = item.changeable
            assert row is not None
            person, when = row["ehr_id"], row["event_time"]
            if person in self.cuts:
                continue
            if when <= self.newest_migrated:
                self.cuts[person] = when
                continue
            kept.append(item)
        if len(kept) == len(batch.converted):
            return done
        batch.converted = kept
        return [item.changeable["uuid"] for item in kept if item.changeable is not None]


def _newest_migrated_time(conn: psycopg.Connection) -> datetime | None:
    """The event time of the newest migrated tmp_user_properties row (None: none yet)."""
    row = conn.execute("SELECT max(event_time) FROM tmp_user_properties WHERE migrated").fetchone()
    return row[0] if row else None


def _states_before(
    conn: psycopg.Connection, cuts: Mapping[int | None, datetime]
) -> dict[int | None, tuple[Any, ...]]:
    """Each person's changeable state just before their cut (absent: no row before it)."""
    states: dict[int | None, tuple[Any, ...]] = {}
    people = [person for person in cuts if person is not None]
    with conn.cursor(row_factory=dict_row) as cursor:
        if people:
            rows = cursor.execute(
                "SELECT c.* FROM unnest(%s::bigint[], %s::timestamp[]) AS s(ehr_id, cut) "
                "CROSS JOIN LATERAL (SELECT * FROM changeable_user_properties AS u "
                "WHERE u.ehr_id = s.ehr_id AND u.event_time < s.cut "
                "ORDER BY u.event_time DESC, u.uuid DESC LIMIT 1) AS c",
                (people, [cuts[person] for person in people]),
            ).fetchall()
            states.update((row["ehr_id"], _changeable_state(row)) for row in rows)
        if None in cuts:
            row = cursor.execute(
                "SELECT * FROM changeable_user_properties WHERE ehr_id IS NULL "
                "AND event_time < %s ORDER BY event_time DESC, uuid DESC LIMIT 1",
                (cuts[None],),
            ).fetchone()
            if row is not None:
                states[None] = _changeable_state(row)
    return states


def _drop_history_from_cuts(
    conn: psycopg.Connection, cuts: Mapping[int | None, datetime]
) -> tuple[int, dict[int, datetime]]:
    """Delete late people's changeable rows from their cut on, and permanent rows that an
    event at or after the cut may replace; returns (changeable rows deleted, kept firsts)."""
    people = sorted(person for person in cuts if person is not None)
    times = [cuts[person] for person in people]
    deleted = 0
    kept: dict[int, datetime] = {}
    with conn.cursor() as cursor:
        if people:
            cursor.execute(
                "DELETE FROM changeable_user_properties AS u "
                "USING unnest(%s::bigint[], %s::timestamp[]) AS s(ehr_id, cut) "
                "WHERE u.ehr_id = s.ehr_id AND u.event_time >= s.cut",
                (people, times),
            )
            deleted += cursor.rowcount
            cursor.execute(
                "DELETE FROM permanent_user_properties AS p "
                "USING unnest(%s::bigint[], %s::timestamp[]) AS s(ehr_id, cut) "
                "WHERE p.ehr_id = s.ehr_id AND p.first_login_at >= s.cut",
                (people, times),
            )
            cursor.execute(
                "SELECT ehr_id, first_login_at FROM permanent_user_properties "
                "WHERE ehr_id = ANY(%s)",
                (people,),
            )
            kept = dict(cursor.fetchall())
        if None in cuts:
            cursor.execute(
                "DELETE FROM changeable_user_properties WHERE ehr_id IS NULL AND event_time >= %s",
                (cuts[None],),
            )
            deleted += cursor.rowcount
    return deleted, kept


def _rederive(
    repo: Repository,
    cuts: dict[int | None, datetime],
    cache: _PropertiesCache,
    lower: datetime | None,
    upper: datetime | None,
    batch_size: int,
    result: MigrationResult,
) -> None:
    """Re-derive late people's rows from their cut on, in one transaction.

    Reads every tmp_user_properties row from the earliest cut on (migrated, or pending
    within the run's bounds) in (event_time, uuid) order, replays each late person's
    events after their state before the cut, and marks their pending rows migrated.
    """
    started = time.monotonic()
    start = min(cuts.values())
    log.info(
        "%d people have rows at or before the newest migrated one: re-deriving their "
        "history from %s on",
        len(cuts),
        start.isoformat(),
    )
    window = ["NOT migrated"]
    params: list[Any] = [start]
    if lower is not None:
        window.append("event_time >= %s")
        params.append(lower)
    if upper is not None:
        window.append("event_time < %s")
        params.append(upper)
    query = (
        f"SELECT {_TMP_COLUMNS}, migrated FROM tmp_user_properties "  # noqa: S608
        f"WHERE event_time >= %s AND (migrated OR ({' AND '.join(window)})) "
        "ORDER BY event_time, uuid"
    )
    processed = permanent_count = changeable_count = rows_read = 0
    with repo.transaction() as conn:
        states = _states_before(conn, cuts)
        deleted, kept_firsts = _drop_history_from_cuts(conn, cuts)
        has_first: set[int] = set(kept_firsts)
        with conn.cursor(name="user_properties_rederive", row_factory=dict_row) as stream:
            stream.itersize = batch_size
            stream.execute(query, params)
            while rows := stream.fetchmany(batch_size):
                rows_read += len(rows)
                permanent: list[tuple[Any, ...]] = []
                changeable: list[tuple[Any, ...]] = []
                marked: list[Any] = []
                for row in rows:
                    converted = cache.convert(row)
                    if converted.errors or converted.changeable is None:
                        continue
                    item = converted.changeable
                    person = item["ehr_id"]
                    cut = cuts.get(person, _NOT_LATE)
                    if cut is _NOT_LATE or item["event_time"] < cut:
                        continue
                    state = _changeable_state(item)
                    if states.get(person, _NO_STATE) != state:
                        states[person] = state
                        changeable.append(_changeable_tuple(item))
                    first = converted.permanent
                    if first is not None and person not in has_first:
                        has_first.add(person)
                        permanent.append(_permanent_tuple(first))
                    if not row["migrated"]:
                        marked.append(row["uuid"])
                permanent.sort(key=itemgetter(0))
                if permanent:
                    permanent_count += repo.copy_rows(PERMANENT_USER_PROPERTIES, permanent)
                if changeable:
                    changeable_count += repo.copy_rows(CHANGEABLE_USER_PROPERTIES, changeable)
                if marked:
                    processed += repo.mark_migrated(marked)
                log.info(
                    "re-deriving: %d rows read up to %s, %d late rows marked migrated so far",
                    rows_read,
                    rows[-1]["event_time"],
                    processed,
                )
    result.processed += processed
    result.permanent_inserted += permanent_count
    result.changeable_inserted += changeable_count
    result.rederived_people += len(cuts)
    log.info(
        "re-derived %d people in %.2fs: %d changeable rows replaced by %d, %d permanent rows "
        "written, %d late rows migrated",
        len(cuts),
        time.monotonic() - started,
        deleted,
        changeable_count,
        permanent_count,
        processed,
    )


_NOT_LATE: Any = object()
_NO_STATE: Any = object()


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return f"{type(exc).__name__}: {exc.diag.message_primary}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- source: s3


@dataclass(frozen=True)
class _Line:
    index: int
    entry: str | None
    entry_line: int | None
    data: bytes


class _ReadError(Exception):
    """The raw file could not be read past a line (internal; carries the cause)."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause


def _iter_file_lines(path: Path) -> Iterator[_Line]:
    """Non-empty lines of a ZIP archive (entry by entry) or an NDJSON file, numbered from 1."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    index = 0
    try:
        if magic[:2] == b"PK":
            from dwh_helper.sources.amplitude import iter_lines

            for raw in iter_lines(path):
                index += 1
                yield _Line(index, raw.entry, raw.line, raw.data)
            return
        opener = gzip.open if magic[:2] == b"\x1f\x8b" else open
        with opener(path, "rb") as lines:
            for number, data in enumerate(lines, start=1):
                data = data.strip()
                if data:
                    index += 1
                    yield _Line(index, None, number, data)
    except Exception as exc:
        raise _ReadError(index + 1, exc) from exc


def _convert_line(
    line: _Line,
    rules: FieldMappings,
    strict: bool,
    batch: _Batch,
    result: MigrationResult,
    unknown: Counter[str],
) -> None:
    try:
        event = json.loads(line.data)
    except ValueError as exc:
        error = FieldError("<line>", line.data[:200].decode("utf-8", "replace"), f"not JSON: {exc}")
        batch.rejects.append(_Reject(None, [error], line.entry, line.index))
        _count_errors(result, [error])
        return
    if not isinstance(event, dict):
        error = FieldError("<line>", _clean_json(event), "not a JSON object (an event)")
        batch.rejects.append(_Reject(None, [error], line.entry, line.index))
        _count_errors(result, [error])
        return
    converted = transform_record(event, rules, strict)
    if converted.unknown_keys:
        unknown.update(converted.unknown_keys)
    if converted.errors:
        record_id = event.get("uuid")
        batch.rejects.append(
            _Reject(
                str(record_id) if record_id is not None else None,
                converted.errors,
                line.entry,
                line.index,
                {"entry_line": line.entry_line, "event": event},
            )
        )
        _count_errors(result, converted.errors)
    else:
        batch.converted.append(converted)


def _run_s3(
    repo: Repository,
    rules: FieldMappings,
    strict: bool,
    batch_size: int,
    store: ObjectStore,
    key: str,
    start_after: int,
    result: MigrationResult,
) -> None:
    unknown: Counter[str] = Counter()
    latest = LatestStates(repo, capacity=max(100_000, 3 * batch_size))
    result.last_line = start_after
    with tempfile.TemporaryDirectory(prefix="dwh-user-properties-") as workdir:
        path = store.download_file(key, Path(workdir) / "raw")
        lines = _iter_file_lines(path)
        failed_line: int | None = None
        try:
            done = False
            while not done:
                batch = _Batch()
                started = time.monotonic()
                read_error: _ReadError | None = None
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
                except _ReadError as exc:
                    read_error = exc
                if batch.first_line is not None:
                    failed_line = batch.first_line
                    job = _prepare(batch, latest)
                    with repo.transaction():
                        written = _write_batch(repo, job, s3_key=key)
                    _record_batch(result, batch, written)
                    result.last_line = batch.last_line
                    log.info(
                        "batch %d: lines %d-%d of s3 key %s, %d processed, %d rejected, "
                        "%d permanent and %d changeable inserted in %.2fs",
                        result.batches,
                        batch.first_line,
                        batch.last_line,
                        key,
                        len(batch.converted),
                        len(batch.rejects),
                        written.permanent,
                        written.changeable,
                        time.monotonic() - started,
                    )
                if read_error is not None:
                    failed_line = max(read_error.index, (result.last_line or 0) + 1)
                    raise read_error.cause
        except Exception as exc:
            result.status = "interrupted"
            result.failed_line = failed_line
            result.error = _describe_error(exc)
            result.unknown_keys = dict(unknown)
            raise MigrationInterrupted(
                f"user-properties run over s3 key {key} interrupted at line "
                f"{result.failed_line}: {result.error}; lines up to {result.last_line} are done, "
                f"run again with start_after={result.last_line}",
                result,
            ) from exc
    result.unknown_keys = dict(unknown)
