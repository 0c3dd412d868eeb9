"""DDL of the DWH tables: create or conform a table from its `TableSpec`; monthly partitions.

An existing table is conformed column by column (added, widened, defaults set); rows that would
break a new primary key are moved to `load_rejects`, never dropped; a plain `events_part` is
converted to the partitioned table. Table functions run inside the caller's migration
transaction; `create_month_partitions` runs in short transactions of its own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from datetime import date

import psycopg
from psycopg import sql

from dwh_helper.dwh.tables import EVENTS_PART, TableSpec

log = logging.getLogger(__name__)

SCHEMA_LOCK_ID = 7_461_503_211
"""pg_advisory_xact_lock key shared by every schema change (migrations, partitions)."""


class MigrationError(RuntimeError):
    """A migration could not be applied; nothing of it was committed."""


_TYPE_NAMES = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}
_WIDER_THAN = {("bigint", "integer"), ("numeric", "integer"), ("numeric", "bigint")}


def ident(*parts: str) -> sql.Identifier:
    """A (schema-)qualified SQL identifier."""
    return sql.Identifier(*parts)


def relkind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    """The relkind of schema.name ('r', 'p', ...) or None when it does not exist."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return row[0] if row else None


def column_ddl(spec: TableSpec) -> sql.Composed:
    """The column list of `CREATE TABLE` for a spec."""
    parts = []
    for column in spec.columns:
        piece = sql.SQL("{} {}").format(ident(column.name), sql.SQL(column.type))
        if column.not_null:
            piece = sql.SQL("{} NOT NULL").format(piece)
        if column.default is not None:
            piece = sql.SQL("{} DEFAULT {}").format(piece, sql.SQL(column.default))
        parts.append(piece)
    return sql.SQL(", ").join(parts)


def create_table(conn: psycopg.Connection, spec: TableSpec) -> None:
    """CREATE TABLE from a spec, with its key, indexes and (for events_part) partitions."""
    statement = sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
        ident(spec.schema, spec.name),
        column_ddl(spec),
        sql.SQL(", ").join(map(ident, spec.key)),
    )
    if spec.partitioned_by:
        statement = sql.SQL("{} PARTITION BY RANGE ({})").format(
            statement, ident(spec.partitioned_by)
        )
    conn.execute(statement)
    if spec.partitioned_by:
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
                ident(spec.schema, f"{spec.name}_default"), ident(spec.schema, spec.name)
            )
        )
    log.info("created table %s", spec.qualified)


def _ensure_indexes(conn: psycopg.Connection, spec: TableSpec) -> None:
    for columns in spec.indexes:
        name = f"{spec.name}_{'_'.join(columns)}_idx"
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                ident(name),
                ident(spec.schema, spec.name),
                sql.SQL(", ").join(map(ident, columns)),
            )
        )


def _current_columns(conn: psycopg.Connection, schema: str, name: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, name),
    ).fetchall()
    return dict(rows)


def _conform_columns(conn: psycopg.Connection, spec: TableSpec, table: str) -> None:
    """Add missing columns and widen the ones whose type differs from the spec."""
    current = _current_columns(conn, spec.schema, table)
    for column in spec.columns:
        wanted = _TYPE_NAMES.get(column.type, column.type)
        have = current.get(column.name)
        target = ident(spec.schema, table)
        if have is None:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    target, ident(column.name), sql.SQL(column.type)
                )
            )
            if column.default is not None:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                        target, ident(column.name), sql.SQL(column.default)
                    )
                )
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = {}").format(
                        target, ident(column.name), sql.SQL(column.default)
                    )
                )
            log.info("%s: added column %s %s", table, column.name, column.type)
            continue
        if have != wanted and (have, wanted) not in _WIDER_THAN:
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                            target,
                            ident(column.name),
                            sql.SQL(column.type),
                            ident(column.name),
                            sql.SQL(column.type),
                        )
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"{table}.{column.name}: cannot convert {have} to {column.type}: "
                    f"{exc.diag.message_primary}; fix the values, then run the migration again"
                ) from exc
            log.info("%s: column %s %s -> %s", table, column.name, have, column.type)
        if column.default is not None:
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                    target, ident(column.name), sql.SQL(column.default)
                )
            )


def _has_key(conn: psycopg.Connection, schema: str, table: str, key: tuple[str, ...]) -> bool:
    rows = conn.execute(
        "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique GROUP BY i.indexrelid",
        (schema, table),
    ).fetchall()
    return any(sorted(row[0]) == sorted(key) for row in rows)


def _move_key_violations(conn: psycopg.Connection, spec: TableSpec, table: str) -> int:
    """Move null-key rows, and all but the first copy of a duplicated key, to load_rejects."""
    target = ident(spec.schema, table)
    key = spec.key
    nulls = sql.SQL(" OR ").join(sql.SQL("a.{} IS NULL").format(ident(c)) for c in key)
    same = sql.SQL(" AND ").join(sql.SQL("a.{0} = b.{0}").format(ident(c)) for c in key)
    record_id = sql.SQL(" || '/' || ").join(
        sql.SQL("coalesce(d.{}::text, '')").format(ident(c)) for c in key
    )
    moved = 0
    for reason, delete in (
        ("null key", sql.SQL("DELETE FROM {} a WHERE {} RETURNING a.*").format(target, nulls)),
        (
            "duplicate key; the first copy was kept",
            sql.SQL(
                "DELETE FROM {0} a USING {0} b WHERE {1} AND a.ctid > b.ctid RETURNING a.*"
            ).format(target, same),
        ),
    ):
        cursor = conn.execute(
            sql.SQL(
                "WITH d AS ({delete}) INSERT INTO load_rejects (source, record_id, reason, raw) "
                "SELECT {source}, {record_id}, {reason}, to_jsonb(d) FROM d"
            ).format(
                delete=delete,
                source=sql.Literal(f"migration:{spec.name}"),
                record_id=record_id,
                reason=sql.Literal(f"{reason} ({', '.join(key)}) while adding the table's key"),
            )
        )
        if cursor.rowcount:
            log.warning("%s: moved %d rows to load_rejects (%s)", table, cursor.rowcount, reason)
        moved += cursor.rowcount
    return moved


def _ensure_key(conn: psycopg.Connection, spec: TableSpec, table: str) -> None:
    if _has_key(conn, spec.schema, table, spec.key):
        return
    _move_key_violations(conn, spec, table)
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
            ident(spec.schema, table), sql.SQL(", ").join(map(ident, spec.key))
        )
    )
    log.info("%s: added primary key (%s)", table, ", ".join(spec.key))


def _rename_indexes(conn: psycopg.Connection, schema: str, table: str, suffix: str) -> None:
    names = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (schema, table)
    ).fetchall()
    for (name,) in names:
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                ident(schema, name), ident(f"{name[: 63 - len(suffix)]}{suffix}")
            )
        )


def _convert_to_partitioned(conn: psycopg.Connection, spec: TableSpec) -> None:
    """Replace a plain events_part by the partitioned table, moving every row across."""
    legacy = f"{spec.name}_legacy"
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident(spec.schema, spec.name), ident(legacy))
    )
    _rename_indexes(conn, spec.schema, legacy, "_legacy")
    _conform_columns(conn, spec, legacy)
    _move_key_violations(conn, spec, legacy)
    create_table(conn, spec)
    months = conn.execute(
        sql.SQL("SELECT DISTINCT date_trunc('month', {})::date FROM {}").format(
            ident(spec.partitioned_by or ""), ident(spec.schema, legacy)
        )
    ).fetchall()
    ensure_month_partitions(conn, [row[0] for row in months])
    columns = sql.SQL(", ").join(map(ident, spec.column_names))
    moved = conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            ident(spec.schema, spec.name), columns, columns, ident(spec.schema, legacy)
        )
    ).rowcount
    conn.execute(sql.SQL("DROP TABLE {}").format(ident(spec.schema, legacy)))
    log.info("%s: converted to a partitioned table, %d rows moved", spec.name, moved)


def ensure_device_fk(conn: psycopg.Connection) -> None:
    """events_part.device_id references mobile_devices; unknown devices get a bare row first."""
    exists = conn.execute(
        "SELECT 1 FROM pg_constraint WHERE conname = 'events_part_device_id_fkey'"
    ).fetchone()
    if exists:
        return
    conn.execute(
        "INSERT INTO mobile_devices (device_id) SELECT DISTINCT device_id FROM events_part "
        "WHERE device_id IS NOT NULL ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "ALTER TABLE events_part ADD CONSTRAINT events_part_device_id_fkey "
        "FOREIGN KEY (device_id) REFERENCES mobile_devices (device_id)"
    )


def conform_table(conn: psycopg.Connection, spec: TableSpec) -> None:
    """Create the table, or bring an existing one to the spec without losing a row."""
    kind = relkind(conn, spec.schema, spec.name)
    if kind is None:
        create_table(conn, spec)
    elif spec.partitioned_by and kind != "p":
        _convert_to_partitioned(conn, spec)
    else:
        _conform_columns(conn, spec, spec.name)
        _ensure_key(conn, spec, spec.name)
    _ensure_indexes(conn, spec)


def _month_bounds(month: date) -> tuple[date, date]:
    start = month.replace(day=1)
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start, end


def ensure_month_partitions(conn: psycopg.Connection, months: Iterable[date]) -> list[str]:
    """Create events_part's monthly partitions for the given months; returns those created.

    Rows of that month already caught by the default partition are moved into
    the new partition, so creating it never fails.
    """
    created: list[str] = []
    wanted = sorted({_month_bounds(month) for month in months})
    if not wanted:
        return created
    spec = EVENTS_PART
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
        for start, end in wanted:
            name = f"{spec.name}_{start:%Y%m}"
            if relkind(conn, spec.schema, name):
                continue
            partition = ident(spec.schema, name)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(partition, ident(spec.schema, spec.name))
            )
            conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {default} WHERE event_time >= %s "
                    "AND event_time < %s RETURNING *) INSERT INTO {partition} SELECT * FROM moved"
                ).format(default=ident(spec.schema, f"{spec.name}_default"), partition=partition),
                (start, end),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    ident(spec.schema, spec.name),
                    partition,
                    sql.Literal(start.isoformat()),
                    sql.Literal(end.isoformat()),
                )
            )
            created.append(name)
            log.info("created partition %s [%s, %s)", name, start, end)
    return created


def month_partitions(conn: psycopg.Connection) -> set[str]:
    """Months ('YYYY-MM') that already have an events_part partition."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = %s",
        (EVENTS_PART.schema, EVENTS_PART.name),
    ).fetchall()
    prefix = f"{EVENTS_PART.name}_"
    months = set()
    for (name,) in rows:
        suffix = name.removeprefix(prefix)
        if len(suffix) == 6 and suffix.isdigit():
            months.add(f"{suffix[:4]}-{suffix[4:]}")
    return months


PARTITION_LOCK_TIMEOUT = 2.0
"""Seconds one attempt to create partitions waits for a lock before it lets go and retries."""
PARTITION_WAIT = 900.0
"""Seconds a load keeps retrying before it gives up on creating its partitions."""


class PartitionUnavailable(RuntimeError):
    """Month partitions could not be created in time (other sessions kept their tables busy)."""


def create_month_partitions(
    conn: psycopg.Connection,
    months: Iterable[date],
    *,
    lock_timeout: float = PARTITION_LOCK_TIMEOUT,
    wait: float = PARTITION_WAIT,
) -> list[str]:
    """Create missing events_part partitions in short transactions of their own, outside any load.

    Each attempt takes the schema's advisory lock and waits at most `lock_timeout` seconds for
    a lock (ATTACH PARTITION needs SHARE ROW EXCLUSIVE on mobile_devices for the cloned foreign
    key, so it waits for loads still writing devices); on a timeout it lets go of everything
    and retries with a growing pause, for up to `wait` seconds. It never runs inside a load's
    data transaction, so it cannot take part in a deadlock. The connection must be idle.
    """
    wanted = sorted({_month_bounds(month)[0] for month in months})
    deadline = time.monotonic() + wait
    pause = 0.05
    attempts = 0
    while True:
        have = month_partitions(conn)
        missing = [month for month in wanted if f"{month:%Y-%m}" not in have]
        if not missing:
            return []
        attempts += 1
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")
                    )
                )
                return ensure_month_partitions(conn, missing)
        except psycopg.errors.LockNotAvailable as exc:
            if time.monotonic() + pause > deadline:
                raise PartitionUnavailable(
                    f"could not create events_part partitions for "
                    f"{', '.join(f'{m:%Y-%m}' for m in missing)} in {wait:.0f}s "
                    f"({attempts} attempts; other sessions kept events_part_default or "
                    f"mobile_devices busy): {exc}"
                ) from exc
            log.info(
                "partitions %s: tables busy (attempt %d), retrying in %.2fs",
                ", ".join(f"{m:%Y-%m}" for m in missing),
                attempts,
                pause,
            )
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 2.0)
