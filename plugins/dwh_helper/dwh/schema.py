"""DWH schema versions: the migrations (one literal, ordered list) and `migrate`.

`migrate(conn)` creates the eight company tables from their specs, or brings
tables that already exist with the company's original types (`user_id int4`,
`device_id varchar(40)`, no keys) to this schema without losing a row (`dwh.ddl`).
Every schema version is listed in `MIGRATIONS` below, and only there. The monthly
partitions live in `dwh.ddl`; their names are re-exported here for existing importers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from dwh_helper.dwh.appmetrica_schema import create_appmetrica_schema
from dwh_helper.dwh.ddl import (  # noqa: F401 - partitions re-exported for their importers
    SCHEMA_LOCK_ID,
    MigrationError,
    PartitionUnavailable,
    conform_table,
    create_month_partitions,
    ensure_device_fk,
    ensure_month_partitions,
    month_partitions,
    relkind,
)
from dwh_helper.dwh.tables import DWH_TABLES, EVENTS_PART, MOBILE_DEVICES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One schema version: a number, a name, and the function that applies it."""

    version: int
    name: str
    apply: Callable[[psycopg.Connection], None]


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
    ensure_device_fk(conn)


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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "company tables, load_log, load_rejects", _company_tables),
    Migration(2, "appmetrica schema", create_appmetrica_schema),
    Migration(3, "load journal v2: verification, lifecycle, value reports", _journal_v2),
)
"""Every schema version, in the order applied. A new version is appended here (never edited
or renumbered); its function may live with the tables it creates."""


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """Versions recorded in schema_migrations (empty when the table does not exist)."""
    if relkind(conn, "public", "schema_migrations") is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply every pending migration, each in its own transaction; returns the versions applied."""
    applied: list[int] = []
    for migration in MIGRATIONS:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
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
