"""The user-properties ETL's cheaper write paths give the tables the staging path gives:
optimistic COPY of changeable rows, a person's permanent row sent once per run."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES, TMP_USER_PROPERTIES
from dwh_helper.pipeline.user_properties import migrate_user_properties
from dwh_helper.pipeline.user_properties_copy import ChangeableCopy
from dwh_helper.pipeline.user_properties_state import KnownFirsts

T0 = datetime(2024, 3, 1, 10, 0, 0)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def _records(n: int) -> list[tuple]:
    """n pending rows of 5 people whose states change now and then, with a record the mapping
    rejects (EHR_ID "x"), values it stores NULL (age "old"), people without an id, and a row
    of each person late in time order (uuid order differs from time order)."""
    rows = []
    for i in range(1, n + 1):
        props = {"EHR_ID": str(i % 5) if i % 11 else None, "age": 20 + (i // 6) % 3}
        if i % 13 == 0:
            props["EHR_ID"] = "x"
        if i % 17 == 0:
            props["age"] = "old"
        props["Gender"] = "Female" if i % 4 else "Male"
        when = T0 + timedelta(minutes=(n - i) if i % 7 == 0 else i)
        rows.append((uid(i), json.dumps(props), "Russian", 100 + i // 9, "5.1", when, False))
    return rows


def _snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    def fetch(query: str) -> list[tuple]:
        return conn.execute(query).fetchall()

    return {
        "permanent": fetch("SELECT * FROM permanent_user_properties ORDER BY ehr_id"),
        "changeable": fetch("SELECT * FROM changeable_user_properties ORDER BY uuid"),
        "pending": fetch("SELECT uuid FROM tmp_user_properties WHERE NOT migrated ORDER BY uuid"),
        "rejects": fetch(
            "SELECT source, kind, record_id, reason, table_name, column_name, value "
            "FROM load_rejects ORDER BY record_id, kind, reason"
        ),
    }


def _counts(result) -> tuple:
    return (
        result.processed,
        result.rejected,
        result.values_nulled,
        result.permanent_inserted,
        result.changeable_inserted,
        result.batches,
    )


def _reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE permanent_user_properties, changeable_user_properties, load_rejects")
    conn.execute("UPDATE tmp_user_properties SET migrated = false")


@pytest.mark.db
@pytest.mark.parametrize("batch_size", [7, 1000])
def test_optimistic_run_gives_the_staging_runs_tables_row_for_row(
    repo: Repository, dwh_conn: psycopg.Connection, batch_size: int
):
    repo.copy_rows(TMP_USER_PROPERTIES, _records(120))
    staged = migrate_user_properties(repo, batch_size=batch_size, optimistic_copy=False)
    expected = _snapshot(dwh_conn)
    assert staged.rejected > 0 and staged.values_nulled > 0 and staged.changeable_inserted > 0
    _reset(dwh_conn)
    straight = migrate_user_properties(repo, batch_size=batch_size, optimistic_copy=True)
    assert _snapshot(dwh_conn) == expected
    assert _counts(straight) == _counts(staged)


@pytest.mark.db
def test_rows_already_in_the_table_send_the_run_through_staging(
    repo: Repository, dwh_conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
):
    repo.copy_rows(TMP_USER_PROPERTIES, _records(60))
    migrate_user_properties(repo, batch_size=10)
    expected = _snapshot(dwh_conn)
    # the same events pending again while their rows are still in the tables (say, an S3 run
    # over the archive the tmp table was filled from): every straight COPY would conflict
    dwh_conn.execute("UPDATE tmp_user_properties SET migrated = false")
    with caplog.at_level(logging.INFO, logger="dwh_helper.pipeline.user_properties_copy"):
        again = migrate_user_properties(repo, batch_size=10)
    assert (again.changeable_inserted, again.permanent_inserted) == (0, 0)
    tables = ("permanent", "changeable", "pending")
    assert {name: _snapshot(dwh_conn)[name] for name in tables} == {
        name: expected[name] for name in tables
    }
    fallbacks = [r for r in caplog.records if "goes through staging" in r.getMessage()]
    assert len(fallbacks) == 1  # once: the rest of the run does not try again


@pytest.mark.db
def test_changeable_copy_falls_back_at_the_first_conflict_and_stays_there(repo: Repository):
    def row(n: int) -> tuple:
        values = dict.fromkeys(CHANGEABLE_USER_PROPERTIES.column_names)
        values.update(uuid=uid(n), ehr_id=n, event_time=T0 + timedelta(minutes=n), age=n)
        return tuple(values[name] for name in CHANGEABLE_USER_PROPERTIES.column_names)

    copy = ChangeableCopy()
    with repo.transaction():
        assert copy.insert(repo, [row(1), row(2)]) == 2
    assert (copy.optimistic, copy.direct_rows) == (True, 2)
    with repo.transaction():
        assert copy.insert(repo, [row(2), row(3)]) == 1  # row 2 is there: staging skips it
        assert copy.insert(repo, [row(4)]) == 1
    assert (copy.optimistic, copy.direct_rows) == (False, 2)
    ages = repo.latest_changeable([1, 2, 3, 4])
    assert sorted((person, found["age"]) for person, found in ages.items()) == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    assert ChangeableCopy().insert(repo, []) == 0


@pytest.mark.unit
def test_known_firsts_sends_each_persons_row_once_and_stays_bounded():
    known = KnownFirsts(capacity=3)
    assert known.fresh({1: ("a",), 2: ("b",)}) == [("a",), ("b",)]
    assert known.fresh({2: ("b2",), 3: ("c",)}) == [("c",)]
    # a fourth person: everyone is forgotten, so their rows are sent again (the table keeps
    # the first one: nothing changes but the work)
    assert known.fresh({4: ("d",)}) == [("d",)]
    assert known.fresh({1: ("a2",)}) == [("a2",)]
    assert known.fresh({4: ("d2",), 1: ("a3",)}) == []
