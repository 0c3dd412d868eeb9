"""One batch of the user-properties ETL: its rows, its rejects and value reports, and how it
is written — in one transaction, through the one reject writer (`dwh.load_journal`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from dwh_helper.dwh.load_journal import Reject, write_rejects
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES, PERMANENT_USER_PROPERTIES
from dwh_helper.dwh.user_properties_queries import (
    changeable_state,
    clear_line_rejects,
    clear_record_rejects,
)
from dwh_helper.pipeline.user_properties_copy import ChangeableCopy
from dwh_helper.pipeline.user_properties_result import MigrationResult
from dwh_helper.pipeline.user_properties_state import KnownFirsts, LatestStates
from dwh_helper.transform.user_properties import FieldError, TransformResult
from dwh_helper.transform.values import shown

log = logging.getLogger(__name__)

REJECT_SOURCE = "user_properties"
"""`load_rejects.source` of the records this step could not convert (and of its value
reports)."""

permanent_tuple = itemgetter(*PERMANENT_USER_PROPERTIES.column_names)
changeable_tuple = itemgetter(*CHANGEABLE_USER_PROPERTIES.column_names)


@dataclass
class RecordReject:
    """A record that could not be converted: where it was, its errors, and (s3) its event."""

    record_id: str | None
    errors: list[FieldError]
    entry: str | None = None
    line: int | None = None
    raw: dict[str, Any] | None = None


@dataclass
class Batch:
    """One batch's converted records (in order), their places in an S3 file (when read from
    one: (entry, line) per record) and the rejected records."""

    converted: list[TransformResult] = field(default_factory=list)
    places: list[tuple[str | None, int]] = field(default_factory=list)
    rejects: list[RecordReject] = field(default_factory=list)
    first_line: int | None = None
    last_line: int | None = None


@dataclass(frozen=True)
class Written:
    """What writing a batch did."""

    permanent: int
    changeable: int
    repeated: int  # rejects of records an earlier run had rejected already
    nulled: int  # values stored NULL and reported
    repaired: int  # values that had a NUL removed


@dataclass
class Job:
    """One batch ready to write: its rows, rejects, and the tmp rows to mark."""

    batch: Batch
    permanent: list[tuple[Any, ...]]
    changeable: list[tuple[Any, ...]]
    migrated: Sequence[Any] = ()
    clear_rejects: Sequence[str] = ()
    rows_read: int = 0
    up_to: Any = None
    started: float = field(default_factory=time.monotonic)


def count_errors(result: MigrationResult, errors: Sequence[FieldError]) -> None:
    """Count a rejected record once per key that held a bad value (`error_keys`)."""
    for key in {error.key for error in errors}:
        result.error_keys[key] = result.error_keys.get(key, 0) + 1


def record_rejects(rejects: Sequence[RecordReject], key: str | None) -> Iterator[Reject]:
    """load_rejects rows (kind `record`) of rejected records; the journal makes them storable."""
    for reject in rejects:
        first = reject.errors[0] if reject.errors else None
        raw: dict[str, Any] = {"errors": [error.as_dict() for error in reject.errors]}
        if reject.raw is not None:
            raw.update(reject.raw)
        yield Reject(
            source=REJECT_SOURCE,
            reason="; ".join(str(error) for error in reject.errors),
            s3_key=key,
            record_id=reject.record_id,
            entry=reject.entry,
            line=reject.line,
            raw=raw,
            table_name=first.table if first else None,
            column_name=first.column if first else None,
            value=shown(first.value) if first else None,
        )


def value_reports(
    converted: Sequence[TransformResult],
    key: str | None = None,
    places: Sequence[tuple[str | None, int]] = (),
) -> Iterator[Reject]:
    """load_rejects rows (kind `value`) of the values stored NULL in loaded records."""
    for index, item in enumerate(converted):
        if not item.reports:
            continue
        entry, line = places[index] if places else (None, None)
        record_id = str(item.changeable["uuid"]) if item.changeable is not None else None
        for report in item.reports:
            yield Reject.value_report(
                REJECT_SOURCE,
                str(report),
                table=report.table,
                column=report.column,
                value=shown(report.value),
                s3_key=key,
                record_id=record_id,
                entry=entry,
                line=line,
            )


def new_changeable_rows(
    latest: LatestStates, converted: list[TransformResult]
) -> list[tuple[Any, ...]]:
    """Changeable rows whose state differs from the person's latest (database, then run)."""
    latest.load({item.changeable["ehr_id"] for item in converted if item.changeable is not None})
    rows = []
    for item in converted:
        row = item.changeable
        if row is not None and latest.changed(row["ehr_id"], changeable_state(row)):
            rows.append(changeable_tuple(row))
    return rows


def first_permanent_rows(
    converted: list[TransformResult], known: KnownFirsts
) -> list[tuple[Any, ...]]:
    """One permanent row per person: the batch's earliest record wins; with `known`, only
    people whose row the run has not sent yet (the table would keep the earlier one)."""
    seen: dict[int, tuple[Any, ...]] = {}
    for item in converted:
        row = item.permanent
        if row is not None and row["ehr_id"] not in seen:
            seen[row["ehr_id"]] = permanent_tuple(row)
    return known.fresh(seen)


def prepare(batch: Batch, latest: LatestStates, known: KnownFirsts, **extra: Any) -> Job:
    """The rows a batch writes: first permanent row per person, changeable rows on change."""
    return Job(
        batch,
        first_permanent_rows(batch.converted, known),
        new_changeable_rows(latest, batch.converted),
        **extra,
    )


def write_batch(
    repo: Repository,
    job: Job,
    *,
    changeable_copy: ChangeableCopy,
    s3_key: str | None = None,
) -> Written:
    """Write one batch inside the caller's transaction.

    Earlier rejects of the same records (tmp_table) or lines (s3) are replaced, so
    `load_rejects` holds each pending record's current errors once. `changeable_copy`: the
    run's COPY of changeable rows (straight until a conflict, or always staged).
    """
    batch = job.batch
    permanent = repo.copy_rows(PERMANENT_USER_PROPERTIES, job.permanent) if job.permanent else 0
    changeable = changeable_copy.insert(repo, job.changeable)
    repeated = 0
    reports = list(value_reports(batch.converted, s3_key, batch.places))
    with repo.connection() as conn:
        if job.clear_rejects:
            before = clear_record_rejects(conn, REJECT_SOURCE, list(job.clear_rejects))
            repeated = sum(reject.record_id in before for reject in batch.rejects)
        if s3_key is not None and batch.first_line is not None:
            assert batch.last_line is not None
            lines = clear_line_rejects(
                conn, REJECT_SOURCE, s3_key, batch.first_line, batch.last_line
            )
            repeated = sum(reject.line in lines for reject in batch.rejects)
        if batch.rejects or reports:
            write_rejects(conn, [*record_rejects(batch.rejects, s3_key), *reports])
    if job.migrated:
        repo.mark_migrated(job.migrated)
    repaired = sum(item.repairs for item in batch.converted)
    return Written(permanent, changeable, repeated, len(reports), repaired)


def record_batch(result: MigrationResult, batch: Batch, written: Written) -> None:
    """Add a committed batch's counts to the run's result."""
    result.batches += 1
    result.processed += len(batch.converted)
    result.rejected += len(batch.rejects)
    result.rejected_before += written.repeated
    result.values_nulled += written.nulled
    result.values_repaired += written.repaired
    result.permanent_inserted += written.permanent
    result.changeable_inserted += written.changeable


def commit_job(
    repo: Repository,
    result: MigrationResult,
    job: Job,
    changeable_copy: ChangeableCopy,
) -> None:
    """Write a tmp_table batch in its own transaction, count it, and log one line."""
    with repo.transaction():
        written = write_batch(repo, job, changeable_copy=changeable_copy)
    record_batch(result, job.batch, written)
    log.info(
        "batch %d: %d rows up to %s, %d processed, %d rejected, %d values nulled, "
        "%d permanent and %d changeable inserted in %.2fs",
        result.batches,
        job.rows_read,
        job.up_to,
        len(job.batch.converted),
        len(job.batch.rejects),
        written.nulled,
        written.permanent,
        written.changeable,
        time.monotonic() - job.started,
    )
