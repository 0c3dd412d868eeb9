"""DWH schema: versioned, idempotent migrations and on-demand monthly partitions.

`migrate(conn)` creates the eight company tables from their specs, or brings
tables that already exist with the company's original types (`user_id int4`,
`device_id varchar(40)`, no keys) to this schema without losing a row: rows
that would break a new key are moved to `load_rejects`, never dropped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql

from dwh_helper.dwh.tables import DWH_TABLES, EVENTS_PART, MOBILE_DEVICES, TableSpec

log = logging.getLogger(__name__)

_LOCK_ID = 7_461_503_211  # pg_advisory_xact_lock key shared by every schema change


class MigrationError(RuntimeError):
    """A migration could not be applied; nothing of it was committed."""


@dataclass(frozen=True)
class Migration:
    """One schema version: a number, a name, and the function that applies it."""

    version: int
    name: str
    apply: Callable[[psycopg.Connection], None]


_TYPE_NAMES = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}
_WIDER_THAN = {("bigint", "integer"), ("numeric", "integer"), ("numeric", "bigint")}


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _exists(conn: psycopg.Connection, schema: str, name: str) -> str | None:
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
        piece = sql.SQL("{} {}").format(_ident(column.name), sql.SQL(column.type))
        if column.not_null:
            piece = sql.SQL("{} NOT NULL").format(piece)
        if column.default is not None:
            piece = sql.SQL("{} DEFAULT {}").format(piece, sql.SQL(column.default))
        parts.append(piece)
    return sql.SQL(", ").join(parts)


def create_table(conn: psycopg.Connection, spec: TableSpec) -> None:
    """CREATE TABLE from a spec, with its key, indexes and (for events_part) partitions."""
    statement = sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
        _ident(spec.schema, spec.name),
        column_ddl(spec),
        sql.SQL(", ").join(map(_ident, spec.key)),
    )
    if spec.partitioned_by:
        statement = sql.SQL("{} PARTITION BY RANGE ({})").format(
            statement, _ident(spec.partitioned_by)
        )
    conn.execute(statement)
    if spec.partitioned_by:
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
                _ident(spec.schema, f"{spec.name}_default"), _ident(spec.schema, spec.name)
            )
        )
    log.info("created table %s", spec.qualified)


def _ensure_indexes(conn: psycopg.Connection, spec: TableSpec) -> None:
    for columns in spec.indexes:
        name = f"{spec.name}_{'_'.join(columns)}_idx"
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                _ident(name),
                _ident(spec.schema, spec.name),
                sql.SQL(", ").join(map(_ident, columns)),
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
        target = _ident(spec.schema, table)
        if have is None:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    target, _ident(column.name), sql.SQL(column.type)
                )
            )
            if column.default is not None:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                        target, _ident(column.name), sql.SQL(column.default)
                    )
                )
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = {}").format(
                        target, _ident(column.name), sql.SQL(column.default)
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
                            _ident(column.name),
                            sql.SQL(column.type),
                            _ident(column.name),
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
                    target, _ident(column.name), sql.SQL(column.default)
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
    target = _ident(spec.schema, table)
    key = spec.key
    nulls = sql.SQL(" OR ").join(sql.SQL("a.{} IS NULL").format(_ident(c)) for c in key)
    same = sql.SQL(" AND ").join(sql.SQL("a.{0} = b.{0}").format(_ident(c)) for c in key)
    record_id = sql.SQL(" || '/' || ").join(
        sql.SQL("coalesce(d.{}::text, '')").format(_ident(c)) for c in key
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
            _ident(spec.schema, table), sql.SQL(", ").join(map(_ident, spec.key))
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
                _ident(schema, name), _ident(f"{name[: 63 - len(suffix)]}{suffix}")
            )
        )


def _convert_to_partitioned(conn: psycopg.Connection, spec: TableSpec) -> None:
    """Replace a plain events_part by the partitioned table, moving every row across."""
    legacy = f"{spec.name}_legacy"
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            _ident(spec.schema, spec.name), _ident(legacy)
        )
    )
    _rename_indexes(conn, spec.schema, legacy, "_legacy")
    _conform_columns(conn, spec, legacy)
    _move_key_violations(conn, spec, legacy)
    create_table(conn, spec)
    months = conn.execute(
        sql.SQL("SELECT DISTINCT date_trunc('month', {})::date FROM {}").format(
            _ident(spec.partitioned_by or ""), _ident(spec.schema, legacy)
        )
    ).fetchall()
    ensure_month_partitions(conn, [row[0] for row in months])
    columns = sql.SQL(", ").join(map(_ident, spec.column_names))
    moved = conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            _ident(spec.schema, spec.name), columns, columns, _ident(spec.schema, legacy)
        )
    ).rowcount
    conn.execute(sql.SQL("DROP TABLE {}").format(_ident(spec.schema, legacy)))
    log.info("%s: converted to a partitioned table, %d rows moved", spec.name, moved)


def _ensure_device_fk(conn: psycopg.Connection) -> None:
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
    kind = _exists(conn, spec.schema, spec.name)
    if kind is None:
        create_table(conn, spec)
    elif spec.partitioned_by and kind != "p":
        _convert_to_partitioned(conn, spec)
    else:
        _conform_columns(conn, spec, spec.name)
        _ensure_key(conn, spec, spec.name)
    _ensure_indexes(conn, spec)


_SERVICE_TABLES = """
CREATE TABLE IF NOT EXISTS load_rejects (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    s3_key text,
    record_id text,
    entry text,
    line integer,
    reason text NOT NULL,
    raw jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS load_rejects_s3_key_idx ON load_rejects (s3_key);
CREATE INDEX IF NOT EXISTS load_rejects_record_id_idx ON load_rejects (record_id);
CREATE TABLE IF NOT EXISTS load_log (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    s3_key text NOT NULL,
    window_start timestamptz,
    window_end timestamptz,
    rows_read bigint NOT NULL DEFAULT 0,
    rows_inserted jsonb NOT NULL DEFAULT '{}'::jsonb,
    rows_rejected bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    error text
);
CREATE INDEX IF NOT EXISTS load_log_s3_key_idx ON load_log (s3_key, started_at);
"""


def _company_tables(conn: psycopg.Connection) -> None:
    conn.execute(_SERVICE_TABLES)
    ordered = [MOBILE_DEVICES, EVENTS_PART] + [
        spec for spec in DWH_TABLES.values() if spec not in (MOBILE_DEVICES, EVENTS_PART)
    ]
    for spec in ordered:
        conform_table(conn, spec)
    _ensure_device_fk(conn)


_JOURNAL_V2 = """
ALTER TABLE load_log
    ADD COLUMN IF NOT EXISTS bytes bigint,
    ADD COLUMN IF NOT EXISTS sha256 text,
    ADD COLUMN IF NOT EXISTS verified boolean,
    ADD COLUMN IF NOT EXISTS values_nulled bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS values_repaired bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS duration_seconds double precision,
    ADD COLUMN IF NOT EXISTS backend_pid integer,
    ADD COLUMN IF NOT EXISTS details jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX IF NOT EXISTS load_log_status_idx ON load_log (status, started_at);
ALTER TABLE load_rejects
    ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'record',
    ADD COLUMN IF NOT EXISTS table_name text,
    ADD COLUMN IF NOT EXISTS column_name text,
    ADD COLUMN IF NOT EXISTS value text;
"""
"""Load journal v2. load_log: the object's size and SHA-256, whether they matched what extract
recorded (NULL: no metadata), values nulled/repaired, the real duration, the PID of the backend
holding a `running` row (to tell an abandoned attempt) and free-form details (e.g. the identity
an AppMetrica file was keyed by). load_rejects: `kind` is 'record' (the record was rejected) or
'value' (one value was stored NULL and the record loaded), with the table, column and value."""


def _journal_v2(conn: psycopg.Connection) -> None:
    conn.execute(_JOURNAL_V2)


MIGRATIONS: list[Migration] = [
    Migration(1, "company tables, load_log, load_rejects", _company_tables),
    Migration(3, "load journal v2: verification, lifecycle, value reports", _journal_v2),
]
"""Every schema version in order; later issues append (never edit) entries."""


def register(migration: Migration) -> None:
    """Add a migration (modules that own a schema of their own call this at import)."""
    if any(existing.version == migration.version for existing in MIGRATIONS):
        return
    MIGRATIONS.append(migration)
    MIGRATIONS.sort(key=lambda item: item.version)


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """Versions recorded in schema_migrations (empty when the table does not exist)."""
    if _exists(conn, "public", "schema_migrations") is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply every pending migration, each in its own transaction; returns the versions applied."""
    _load_registered_migrations()
    applied: list[int] = []
    for migration in MIGRATIONS:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            if migration.version in applied_versions(conn):
                continue
            log.info("applying migration %d: %s", migration.version, migration.name)
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
    if not applied:
        log.info("schema is up to date (version %d)", MIGRATIONS[-1].version)
    return applied


def _load_registered_migrations() -> None:
    """Import the modules that register migrations of their own."""
    import importlib

    for module in ("dwh_helper.dwh.appmetrica_schema",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


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
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        for start, end in wanted:
            name = f"{spec.name}_{start:%Y%m}"
            if _exists(conn, spec.schema, name):
                continue
            partition = _ident(spec.schema, name)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(partition, _ident(spec.schema, spec.name))
            )
            conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {default} WHERE event_time >= %s "
                    "AND event_time < %s RETURNING *) INSERT INTO {partition} SELECT * FROM moved"
                ).format(default=_ident(spec.schema, f"{spec.name}_default"), partition=partition),
                (start, end),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    _ident(spec.schema, spec.name),
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
