"""Migrations: idempotent, lossless on the company's original tables; partitions on demand."""

from __future__ import annotations

import ast
from datetime import date, datetime
from pathlib import Path

import pytest

from dwh_helper.dwh.ddl import ensure_month_partitions
from dwh_helper.dwh.pages import select_page
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.schema import MIGRATIONS, migrate

pytestmark = pytest.mark.db

# The company's current definitions: narrow types, no keys, a plain events_part.
ORIGINAL_DDL = """
CREATE TABLE mobile_devices (device_id varchar(40), device_brand varchar(40), device_carrier text,
    device_family text, device_manufacturer text, device_model text, device_type text);
CREATE TABLE events_part (uuid uuid, event_type text, event_time timestamp, user_id int4,
    platform text, device_id varchar(40), event_id int4, language text, os_name text,
    os_version text, session_id int8, start_version text, version_name text);
CREATE TABLE technical_data (uuid uuid, insert_id text, amplitude_attribution_ids json,
    amplitude_id int8, is_attribution_event text, library text, group_properties_json json,
    groups_json json, plan_json json);
CREATE TABLE tmp_user_properties (uuid uuid PRIMARY KEY, user_properties_json jsonb,
    language text, session_id int8, start_version text, event_time timestamp);
CREATE TABLE permanent_user_properties (ehr_id int4 PRIMARY KEY, first_login_at timestamp,
    gender text, cohort_day int4, cohort_week int4, cohort_month int4, registered_via_app boolean,
    source text);
"""

U = "54050f2a-63b7-11ed-ae7f-79799fc6c6b{}"


def _schema_snapshot(conn) -> list[tuple]:
    columns = conn.execute(
        "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema IN ('public', 'appmetrica') "
        "ORDER BY 1, 2, 3"
    ).fetchall()
    indexes = conn.execute(
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname IN ('public', 'appmetrica') ORDER BY 1, 2, 3"
    ).fetchall()
    return columns + indexes


def test_migrate_twice_changes_nothing(empty_dsn: str):
    with open_connection(empty_dsn) as conn:
        first = migrate(conn)
        snapshot = _schema_snapshot(conn)
        assert first == [migration.version for migration in MIGRATIONS]
        assert migrate(conn) == []
        assert _schema_snapshot(conn) == snapshot


@pytest.mark.unit
def test_migrations_are_one_literal_ordered_list():
    assert [migration.version for migration in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert isinstance(MIGRATIONS, tuple)  # nothing appends to it at import time
    package = Path(__file__).resolve().parents[2] / "plugins" / "dwh_helper"
    declaring = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Migration"
    )
    assert set(declaring) == {"dwh/schema.py"}


def test_migration_command_line(empty_dsn: str, capsys):
    from dwh_helper.dwh.__main__ import main

    assert main(["migrate", "--dsn", empty_dsn]) == 0
    assert "applied migrations" in capsys.readouterr().out
    assert main(["migrate", "--dsn", empty_dsn]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_original_tables_are_brought_to_the_schema_without_losing_a_row(empty_dsn: str):
    with open_connection(empty_dsn) as conn:
        conn.execute(ORIGINAL_DDL)
        conn.execute(
            "INSERT INTO mobile_devices (device_id, device_brand) VALUES ('dev-1', 'samsung'), "
            "('dev-1', 'samsung again'), ('dev-2', 'apple')"
        )
        conn.execute(
            "INSERT INTO events_part (uuid, event_type, event_time, user_id, device_id) VALUES "
            f"('{U.format(1)}', 'open', '2024-03-02 00:57:33', 155683, 'dev-1'), "
            f"('{U.format(2)}', 'buy', '2024-04-10 10:00:00', 42, 'dev-3'), "
            f"('{U.format(3)}', 'late', '2023-12-31 23:59:59', NULL, NULL)"
        )
        conn.execute(
            "INSERT INTO technical_data (uuid, insert_id, groups_json) VALUES "
            f"('{U.format(1)}', 'a', '{{\"г\": 1}}'), ('{U.format(1)}', 'a-dup', NULL), "
            f"('{U.format(2)}', 'b', NULL)"
        )
        conn.execute(
            "INSERT INTO permanent_user_properties (ehr_id, first_login_at, gender) "
            "VALUES (155683, '2024-03-02', 'female')"
        )

        applied = migrate(conn)
        assert applied[0] == 1

        def count(table: str) -> int:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        # every row is still somewhere: in its table, or in load_rejects with the reason
        assert count("events_part") == 3
        assert count("technical_data") == 2
        assert count("permanent_user_properties") == 1
        # mobile_devices: the duplicate dev-1 moved to rejects, dev-3 added for the foreign key
        assert count("mobile_devices") == 3
        rejects = conn.execute(
            "SELECT source, reason, raw->>'device_brand', raw->>'insert_id' FROM load_rejects "
            "ORDER BY source"
        ).fetchall()
        assert [(r[0], r[2] or r[3]) for r in rejects] == [
            ("migration:mobile_devices", "samsung again"),
            ("migration:technical_data", "a-dup"),
        ]
        assert all("duplicate key" in r[1] for r in rejects)

        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
        assert types["events_part.user_id"] == "bigint"
        assert types["events_part.device_id"] == "text"
        assert types["mobile_devices.device_id"] == "text"
        assert types["technical_data.groups_json"] == "jsonb"
        assert types["permanent_user_properties.ehr_id"] == "bigint"
        assert types["tmp_user_properties.migrated"] == "boolean"
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'events_part'").fetchone()
        assert kind == ("p",)
        partitions = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events_part'::regclass"
            )
        }
        assert {
            "events_part_default",
            "events_part_202403",
            "events_part_202404",
            "events_part_202312",
        } <= partitions

        # the widened columns take what the old ones could not
        repo = Repository(conn)
        repo.insert_batch("mobile_devices", [{"device_id": "x" * 60}])
        repo.insert_batch(
            "events_part",
            [
                {
                    "uuid": U.format(9),
                    "event_time": datetime(2024, 3, 5),
                    "user_id": 2**40,
                    "device_id": "x" * 60,
                }
            ],
        )
        assert select_page(repo, "events_part", pk=U.format(9)).rows[0]["user_id"] == 2**40
        assert migrate(conn) == []


def test_events_need_their_device_first(dwh_conn):
    import psycopg

    repo = Repository(dwh_conn)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        repo.insert_batch(
            "events_part",
            [{"uuid": U.format(1), "event_time": datetime(2024, 3, 5), "device_id": "nobody"}],
        )
    repo.insert_batch("mobile_devices", [{"device_id": "x" * 60}])
    repo.insert_batch(
        "events_part",
        [
            {
                "uuid": U.format(1),
                "event_time": datetime(2024, 3, 5),
                "user_id": 2**40,
                "device_id": "x" * 60,
            }
        ],
    )
    assert select_page(repo, "events_part").rows[0]["user_id"] == 2**40


def test_partitions_created_on_demand_take_rows_from_the_default(dwh_conn):
    repo = Repository(dwh_conn)
    repo.insert_batch("events_part", [{"uuid": U.format(1), "event_time": datetime(2024, 7, 9)}])
    where = "SELECT tableoid::regclass::text FROM events_part WHERE uuid = %s"
    assert dwh_conn.execute(where, (U.format(1),)).fetchone() == ("events_part_default",)

    created = ensure_month_partitions(
        dwh_conn, [date(2024, 7, 1), date(2024, 7, 31), date(2024, 12, 15)]
    )
    assert created == ["events_part_202407", "events_part_202412"]
    assert ensure_month_partitions(dwh_conn, [date(2024, 7, 2)]) == []
    assert dwh_conn.execute(where, (U.format(1),)).fetchone() == ("events_part_202407",)
    repo.insert_batch(
        "events_part", [{"uuid": U.format(2), "event_time": datetime(2024, 12, 31, 23, 59)}]
    )
    assert dwh_conn.execute(where, (U.format(2),)).fetchone() == ("events_part_202412",)
    # the unique key still holds across the partitioned table
    assert (
        repo.insert_batch(
            "events_part", [{"uuid": U.format(1), "event_time": datetime(2024, 7, 9)}]
        ).count
        == 0
    )
