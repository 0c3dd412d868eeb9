"""The SQL of the user-properties ETL: the run lock, keyset pages of pending rows, the late
rows' history, and clearing a batch's earlier rejects before it writes its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dwh_helper.dwh.conditions import conditions
from dwh_helper.dwh.tables import CHANGEABLE_STATE_COLUMNS

log = logging.getLogger(__name__)

LOCK_ID = 7_461_503_505
"""pg_advisory_lock key: one user-properties run at a time per database."""

TMP_COLUMNS = (
    "uuid, user_properties_json::text AS user_properties_json, language, session_id, "
    "start_version, event_time"
)
"""The tmp_user_properties columns a run reads (the properties as JSON text: equal texts are
converted once)."""

changeable_state = itemgetter(*CHANGEABLE_STATE_COLUMNS)
"""A changeable row's state: what must differ for a new history row."""


class RunInProgress(RuntimeError):
    """Another user-properties run holds the lock on this database."""


@contextmanager
def run_lock(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Hold a session advisory lock on `conn` so two runs never interleave their batches."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_ID,)).fetchone()
    if not got or not got[0]:
        raise RunInProgress(
            "another user-properties run is in progress on this database; "
            "wait for it to finish (or end its session) and run again"
        )
    try:
        yield conn
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
        except psycopg.Error:
            log.warning("could not release the user-properties run lock (connection lost)")


def time_window(lower: datetime | None, upper: datetime | None) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for `lower <= event_time < upper`."""
    return conditions(("event_time >= %s", lower), ("event_time < %s", upper))


def pending_rows(
    conn: psycopg.Connection,
    lower: datetime | None,
    upper: datetime | None,
    after: tuple[datetime, Any] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The next pending rows in (event_time, uuid) order after `after` (keyset, never OFFSET)."""
    window, params = time_window(lower, upper)
    where = ["migrated = false", "event_time IS NOT NULL", *window]
    if after is not None:
        where.append("event_time >= %s AND (event_time, uuid) > (%s, %s)")
        params.extend([after[0], after[0], after[1]])
    params.append(limit)
    query = (
        f"SELECT {TMP_COLUMNS} FROM tmp_user_properties WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY event_time, uuid LIMIT %s"
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchall()


def pending_without_time(conn: psycopg.Connection, after: Any, limit: int) -> list[dict[str, Any]]:
    """Pending rows with no event_time (they can only be rejected), in uuid order."""
    query = (
        f"SELECT {TMP_COLUMNS} FROM tmp_user_properties "  # noqa: S608
        "WHERE migrated = false AND event_time IS NULL AND (%s::uuid IS NULL OR uuid > %s) "
        "ORDER BY uuid LIMIT %s"
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, (after, after, limit)).fetchall()


def iter_pending(
    conn: psycopg.Connection,
    phase: str,
    lower: datetime | None,
    upper: datetime | None,
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Pending rows batch by batch (keyset pagination): phase `timed` in (event_time, uuid)
    order within the bounds, phase `untimed` those without an event_time."""
    after: Any = None
    while True:
        if phase == "timed":
            rows = pending_rows(conn, lower, upper, after, batch_size)
        else:
            rows = pending_without_time(conn, after, batch_size)
        if not rows:
            return
        yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1]
        after = (last["event_time"], last["uuid"]) if phase == "timed" else last["uuid"]


def newest_migrated_time(conn: psycopg.Connection) -> datetime | None:
    """The event time of the newest migrated tmp_user_properties row (None: none yet)."""
    row = conn.execute("SELECT max(event_time) FROM tmp_user_properties WHERE migrated").fetchone()
    return row[0] if row else None


def states_before(
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
            states.update((row["ehr_id"], changeable_state(row)) for row in rows)
        if None in cuts:
            row = cursor.execute(
                "SELECT * FROM changeable_user_properties WHERE ehr_id IS NULL "
                "AND event_time < %s ORDER BY event_time DESC, uuid DESC LIMIT 1",
                (cuts[None],),
            ).fetchone()
            if row is not None:
                states[None] = changeable_state(row)
    return states


def drop_history_from_cuts(
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


def iter_rows_from(
    conn: psycopg.Connection,
    start: datetime,
    lower: datetime | None,
    upper: datetime | None,
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Every tmp_user_properties row from `start` on — migrated, or pending within the run's
    bounds — in (event_time, uuid) order, `batch_size` at a time (a server-side cursor, in
    the caller's transaction); each row has its `migrated` flag."""
    window, params = time_window(lower, upper)
    pending = " AND ".join(["NOT migrated", *window])
    query = (
        f"SELECT {TMP_COLUMNS}, migrated FROM tmp_user_properties "  # noqa: S608
        f"WHERE event_time >= %s AND (migrated OR ({pending})) ORDER BY event_time, uuid"
    )
    with conn.cursor(name="user_properties_rederive", row_factory=dict_row) as stream:
        stream.itersize = batch_size
        stream.execute(query, [start, *params])
        while rows := stream.fetchmany(batch_size):
            yield rows


def has_record_rejects(conn: psycopg.Connection, source: str) -> bool:
    """Whether `load_rejects` holds rejected records of `source` not tied to an S3 key."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM load_rejects WHERE source = %s AND s3_key IS NULL "
        "AND kind = 'record')",
        (source,),
    ).fetchone()
    return bool(row and row[0])


def clear_record_rejects(conn: psycopg.Connection, source: str, record_ids: list[str]) -> set[str]:
    """Delete the earlier record rejects of these records (not tied to an S3 key); returns
    the record ids that had one."""
    with conn.cursor() as cursor:
        cursor.execute(
            "DELETE FROM load_rejects WHERE source = %s AND s3_key IS NULL AND kind = 'record' "
            "AND record_id = ANY(%s) RETURNING record_id",
            (source, record_ids),
        )
        return {row[0] for row in cursor.fetchall()}


def clear_line_rejects(
    conn: psycopg.Connection, source: str, s3_key: str, first: int, last: int
) -> set[int]:
    """Delete what earlier runs reported for lines `first`..`last` of an S3 file (records and
    values); returns the lines that had a rejected record."""
    with conn.cursor() as cursor:
        cursor.execute(
            "DELETE FROM load_rejects WHERE source = %s AND s3_key = %s "
            "AND line BETWEEN %s AND %s RETURNING line, kind",
            (source, s3_key, first, last),
        )
        return {row[0] for row in cursor.fetchall() if row[1] == "record"}
