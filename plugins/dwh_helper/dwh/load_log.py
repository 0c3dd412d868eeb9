"""The load_log lifecycle: a `running` row per attempt, its completion, abandoned attempts,
the per-object lock that serialises loads of one S3 key, and the journal's read side.

Statuses: `running` (written in its own transaction when a load starts), then one of
`loaded` (completed in the load's data transaction, so it commits with the data),
`already loaded` (another load of the same object and content committed while this one
waited for the key), `failed` (nothing of it was committed) or `abandoned` (its process
died; marked by the next load of the same key, whose backend no longer sees it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dwh_helper.dwh.conditions import conditions, where_clause

STATUSES = ("running", "loaded", "already loaded", "failed", "abandoned")
KEY_LOCK_CLASS = 74_615
"""First half of the two-int advisory lock on an S3 key (the second is hashtext(key))."""


@dataclass
class Completion:
    """What a finished attempt reports in its load_log row."""

    status: str
    rows_read: int = 0
    rows_inserted: Mapping[str, int] = field(default_factory=dict)
    rows_rejected: int = 0
    values_nulled: int = 0
    values_repaired: int = 0
    bytes: int | None = None
    sha256: str | None = None
    verified: bool | None = None
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def start_attempt(
    conn: psycopg.Connection,
    *,
    source: str,
    s3_key: str,
    window: tuple[datetime, datetime] | None = None,
) -> int:
    """Insert a `running` row for this attempt (the caller commits it at once); returns its id."""
    row = conn.execute(
        "INSERT INTO load_log (source, s3_key, window_start, window_end, started_at, status, "
        "backend_pid) VALUES (%s, %s, %s, %s, clock_timestamp(), 'running', pg_backend_pid()) "
        "RETURNING id",
        (source, s3_key, window[0] if window else None, window[1] if window else None),
    ).fetchone()
    assert row is not None
    return int(row[0])


def complete_attempt(conn: psycopg.Connection, attempt_id: int, completion: Completion) -> None:
    """Complete an attempt's row: status, counts, object facts, real end and duration."""
    conn.execute(
        "UPDATE load_log SET status = %s, finished_at = clock_timestamp(), "
        "duration_seconds = extract(epoch FROM clock_timestamp() - started_at), "
        "rows_read = %s, rows_inserted = %s, rows_rejected = %s, values_nulled = %s, "
        "values_repaired = %s, bytes = %s, sha256 = %s, verified = %s, error = %s, "
        "details = details || %s::jsonb WHERE id = %s",
        (
            completion.status,
            completion.rows_read,
            json.dumps(dict(completion.rows_inserted)),
            completion.rows_rejected,
            completion.values_nulled,
            completion.values_repaired,
            completion.bytes,
            completion.sha256,
            completion.verified,
            completion.error[:2000] if completion.error else None,
            json.dumps(dict(completion.details), default=str),
            attempt_id,
        ),
    )


def note_details(conn: psycopg.Connection, attempt_id: int, details: Mapping[str, Any]) -> None:
    """Add facts to an attempt's details (say, a failure after its commit)."""
    conn.execute(
        "UPDATE load_log SET details = details || %s::jsonb WHERE id = %s",
        (json.dumps(dict(details), default=str), attempt_id),
    )


def loaded_before(conn: psycopg.Connection, s3_key: str, attempt_id: int) -> bool:
    """Whether a load of this key other than this attempt ever committed (`loaded`)."""
    row = conn.execute(
        "SELECT 1 FROM load_log WHERE s3_key = %s AND status = 'loaded' AND id <> %s LIMIT 1",
        (s3_key, attempt_id),
    ).fetchone()
    return row is not None


def mark_abandoned(conn: psycopg.Connection, s3_key: str, attempt_id: int) -> list[int]:
    """Called holding the key's lock: mark other `running` rows of this key whose backend is
    gone, or is not waiting for the key's lock (so it is not a live load queued behind this
    one: a backend being torn down after its client died), as `abandoned`; returns their ids.
    """
    rows = conn.execute(
        "UPDATE load_log l SET status = 'abandoned', finished_at = clock_timestamp(), "
        "duration_seconds = extract(epoch FROM clock_timestamp() - l.started_at), "
        "error = coalesce(l.error, 'the process running this load died (database backend ' "
        "|| coalesce(l.backend_pid::text, '?') || ' is gone); nothing of it was committed') "
        "WHERE l.s3_key = %s AND l.status = 'running' AND l.id <> %s AND NOT EXISTS ("
        "SELECT 1 FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid "
        "WHERE k.pid = l.backend_pid AND a.backend_start <= l.started_at "
        "AND k.locktype = 'advisory' AND NOT k.granted AND k.classid::bigint = %s "
        "AND k.objid::bigint = (hashtext(%s)::bigint & 4294967295)) RETURNING l.id",
        (s3_key, attempt_id, KEY_LOCK_CLASS, s3_key),
    ).fetchall()
    return [int(row[0]) for row in rows]


def lock_key(conn: psycopg.Connection, s3_key: str) -> None:
    """Wait for the session advisory lock of an S3 key (serialises loads of one object)."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (KEY_LOCK_CLASS, s3_key))


def unlock_key(conn: psycopg.Connection, s3_key: str) -> None:
    """Release the key's session advisory lock."""
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (KEY_LOCK_CLASS, s3_key))


def loaded_since(conn: psycopg.Connection, s3_key: str, sha256: str, attempt_id: int) -> int | None:
    """The id of a `loaded` row of this key and content that finished after this attempt
    started (a load that committed while this one waited for the key), or None."""
    row = conn.execute(
        "SELECT l.id FROM load_log l JOIN load_log me ON me.id = %s "
        "WHERE l.s3_key = %s AND l.status = 'loaded' AND l.sha256 = %s "
        "AND l.finished_at >= me.started_at ORDER BY l.finished_at DESC LIMIT 1",
        (attempt_id, s3_key, sha256),
    ).fetchone()
    return None if row is None else int(row[0])


# -- the read side (API) ---------------------------------------------------------------------

JOURNAL_COLUMNS = (
    "id, source, s3_key, status, started_at, finished_at, duration_seconds, window_start, "
    "window_end, rows_read, rows_inserted, rows_rejected, values_nulled, values_repaired, "
    "bytes, sha256, verified, error, details"
)


_DAY = "(coalesce(window_start, started_at) AT TIME ZONE 'UTC')::date"
"""A journal row's day: its export window's start, else when the load started (UTC)."""


def _filters(
    source: str | None, day: date | None, s3_key: str | None, status: str | None
) -> tuple[sql.Composable, list[Any]]:
    where, params = conditions(
        ("source = %s", source),
        (f"{_DAY} = %s", day),
        ("s3_key = %s", s3_key),
        ("status = %s", status),
    )
    return where_clause(where), params


def list_attempts(
    conn: psycopg.Connection,
    *,
    source: str | None = None,
    day: date | None = None,
    s3_key: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Journal rows, newest first, filtered and paginated; and how many match in all."""
    where, params = _filters(source, day, s3_key, status)
    with conn.cursor(row_factory=dict_row) as cursor:
        total = cursor.execute(
            sql.SQL("SELECT count(*) AS n FROM load_log{}").format(where), params
        ).fetchone()
        rows = cursor.execute(
            sql.SQL(
                "SELECT {} FROM load_log{} ORDER BY started_at DESC, id DESC LIMIT %s OFFSET %s"
            ).format(sql.SQL(JOURNAL_COLUMNS), where),
            [*params, limit, offset],
        ).fetchall()
    return rows, int(total["n"]) if total else 0


def day_summary(
    conn: psycopg.Connection,
    *,
    source: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Per source and day (the export window's, else the start's): files, the counts of each
    file's latest attempt, the last load time and a status — `complete` when every file's
    latest attempt loaded, else `failed`, `running` or `incomplete`. Newest day first."""
    where, params = conditions(
        ("source = %s", source), (f"{_DAY} >= %s", since), (f"{_DAY} <= %s", until)
    )
    query = sql.SQL("""
        WITH latest AS (
            SELECT DISTINCT ON (s3_key) source, s3_key, status, rows_read, rows_inserted,
                   rows_rejected, values_nulled, finished_at, started_at,
                   (coalesce(window_start, started_at) AT TIME ZONE 'UTC')::date AS day
            FROM load_log{where}
            ORDER BY s3_key, started_at DESC, id DESC
        ), done AS (
            -- an `already loaded` attempt reports nothing new: the file's counts are those of
            -- its last `loaded` attempt
            SELECT l.*, coalesce(prev.rows_read, l.rows_read) AS file_rows_read,
                   coalesce(prev.rows_inserted, l.rows_inserted) AS file_rows_inserted,
                   coalesce(prev.rows_rejected, l.rows_rejected) AS file_rows_rejected,
                   coalesce(prev.values_nulled, l.values_nulled) AS file_values_nulled
            FROM latest l
            LEFT JOIN LATERAL (
                SELECT p.rows_read, p.rows_inserted, p.rows_rejected, p.values_nulled
                FROM load_log p WHERE l.status = 'already loaded' AND p.s3_key = l.s3_key
                AND p.status = 'loaded' ORDER BY p.finished_at DESC LIMIT 1
            ) prev ON true
        )
        SELECT source, day, count(*) AS files,
               sum(file_rows_read)::bigint AS rows_read,
               sum((SELECT coalesce(sum(value::bigint), 0)
                    FROM jsonb_each_text(file_rows_inserted)))::bigint AS rows_inserted,
               sum(file_rows_rejected)::bigint AS rows_rejected,
               sum(file_values_nulled)::bigint AS values_nulled,
               max(coalesce(finished_at, started_at)) AS last_load_at,
               count(*) FILTER (WHERE status IN ('loaded', 'already loaded')) AS files_loaded,
               count(*) FILTER (WHERE status = 'failed') AS files_failed,
               count(*) FILTER (WHERE status = 'running') AS files_running,
               count(*) FILTER (WHERE status = 'abandoned') AS files_abandoned
        FROM done GROUP BY source, day ORDER BY day DESC, source
    """).format(where=where_clause(where))
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query, params).fetchall()
    for row in rows:
        if row["files_loaded"] == row["files"]:
            row["status"] = "complete"
        elif row["files_failed"]:
            row["status"] = "failed"
        elif row["files_running"]:
            row["status"] = "running"
        else:
            row["status"] = "incomplete"
    return rows
