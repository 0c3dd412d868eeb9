"""migrate_user_properties over tmp_user_properties on a real PostgreSQL."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import date, datetime, timedelta

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_STATE_COLUMNS, TMP_USER_PROPERTIES
from dwh_helper.pipeline.user_properties import (
    REJECT_SOURCE,
    LatestStates,
    MigrationInterrupted,
    RunInProgress,
    migrate_user_properties,
)
from dwh_helper.transform.field_mapping import DEFAULT_MAPPING_PATH, parse_field_mappings

pytestmark = pytest.mark.db

T0 = datetime(2024, 3, 1, 10, 0, 0)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def seed(repo: Repository, rows: list[tuple[int, dict | None, datetime | None]], **extra) -> None:
    """tmp_user_properties rows (n → uuid n) with their user properties and event time."""
    repo.copy_rows(
        TMP_USER_PROPERTIES,
        [
            (
                uid(n),
                json.dumps(props) if props is not None else None,
                extra.get("language", "Russian"),
                extra.get("session_id", 111),
                extra.get("start_version", "5.1"),
                when,
                False,
            )
            for n, props, when in rows
        ],
    )


def fetch(conn: psycopg.Connection, query: str, *params) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every table the step writes, in a stable order."""
    return {
        "permanent": fetch(conn, "SELECT * FROM permanent_user_properties ORDER BY ehr_id"),
        "changeable": fetch(conn, "SELECT * FROM changeable_user_properties ORDER BY uuid"),
        "pending": fetch(
            conn, "SELECT uuid FROM tmp_user_properties WHERE NOT migrated ORDER BY uuid"
        ),
        "rejects": fetch(
            conn,
            "SELECT source, s3_key, record_id, entry, line, reason, raw FROM load_rejects "
            "ORDER BY record_id, line",
        ),
    }


def reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE permanent_user_properties, changeable_user_properties, load_rejects")
    conn.execute("UPDATE tmp_user_properties SET migrated = false")


def person(ehr: int | str | None, **props) -> dict:
    return {"EHR_ID": ehr, **props}


def test_rows_land_in_both_tables_and_are_marked(repo, dwh_conn):
    seed(
        repo,
        [
            (1, person("100", Gender="Female", Age="34 года", app_city="SPB", cohort_day=3), T0),
            (2, person("200", gender="male", push_permission="granted"), T0 + timedelta(minutes=1)),
        ],
    )
    result = migrate_user_properties(repo)
    assert (result.processed, result.rejected, result.batches) == (2, 0, 1)
    assert (result.permanent_inserted, result.changeable_inserted) == (2, 2)
    assert result.status == "completed"
    assert fetch(dwh_conn, "SELECT * FROM permanent_user_properties ORDER BY ehr_id") == [
        (100, T0, "female", 3, None, None, None, None),
        (200, T0 + timedelta(minutes=1), "male", None, None, None, None, None),
    ]
    rows = fetch(
        dwh_conn,
        "SELECT uuid, ehr_id, event_time, language, age, app_city, push_permission, session_id, "
        "start_version FROM changeable_user_properties ORDER BY event_time",
    )
    assert rows == [
        (uid(1), 100, T0, "Russian", 34, "Санкт-Петербург", None, 111, "5.1"),
        (uid(2), 200, T0 + timedelta(minutes=1), "Russian", None, None, True, 111, "5.1"),
    ]
    assert fetch(dwh_conn, "SELECT count(*) FROM tmp_user_properties WHERE NOT migrated") == [(0,)]
    again = migrate_user_properties(repo)
    assert (again.processed, again.batches, again.changeable_inserted) == (0, 0, 0)


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_history_a_a_b_a_gives_three_rows(repo, dwh_conn, batch_size):
    a, b = {"age": 30, "app_city": "Moscow"}, {"age": 31, "app_city": "Moscow"}
    seed(
        repo,
        [
            (1, person("7", **a), T0),
            (2, person("7", **a), T0 + timedelta(hours=1)),
            (3, person("7", **b), T0 + timedelta(hours=2)),
            (4, person("7", **a), T0 + timedelta(hours=3)),
        ],
    )
    result = migrate_user_properties(repo, batch_size=batch_size)
    assert result.processed == 4 and result.changeable_inserted == 3
    assert fetch(
        dwh_conn, "SELECT uuid, age FROM changeable_user_properties ORDER BY event_time"
    ) == [(uid(1), 30), (uid(3), 31), (uid(4), 30)]


def test_session_id_alone_is_not_a_change(repo, dwh_conn):
    seed(repo, [(1, person("7", age=30), T0)], session_id=1)
    seed(repo, [(2, person("7", age=30), T0 + timedelta(hours=1))], session_id=2)
    seed(repo, [(3, person("7", age=30), T0 + timedelta(hours=2))], language="English")
    migrate_user_properties(repo)
    assert fetch(dwh_conn, "SELECT uuid FROM changeable_user_properties ORDER BY event_time") == [
        (uid(1),),
        (uid(3),),
    ]


def test_history_continues_from_the_database_across_runs(repo, dwh_conn):
    seed(repo, [(1, person("7", age=30), T0)])
    migrate_user_properties(repo)
    seed(
        repo,
        [
            (2, person("7", age=30), T0 + timedelta(days=1)),
            (3, person("7", age=32), T0 + timedelta(days=2)),
        ],
    )
    result = migrate_user_properties(repo)
    assert result.changeable_inserted == 1
    assert fetch(dwh_conn, "SELECT uuid FROM changeable_user_properties ORDER BY event_time") == [
        (uid(1),),
        (uid(3),),
    ]


def test_people_without_ehr_id(repo, dwh_conn):
    seed(
        repo,
        [
            (1, person(None, age=20), T0),
            (2, person("no ehr", age=20), T0 + timedelta(minutes=1)),
            (3, person("N/A", age=21), T0 + timedelta(minutes=2)),
            (4, {"age": 21}, T0 + timedelta(minutes=3)),
            (5, person("", age=20), T0 + timedelta(minutes=4)),
        ],
    )
    result = migrate_user_properties(repo, batch_size=2)
    assert result.processed == 5 and result.permanent_inserted == 0
    assert fetch(dwh_conn, "SELECT count(*) FROM permanent_user_properties") == [(0,)]
    assert fetch(
        dwh_conn, "SELECT uuid, ehr_id, age FROM changeable_user_properties ORDER BY event_time"
    ) == [(uid(1), None, 20), (uid(3), None, 21), (uid(5), None, 20)]


def test_permanent_earliest_event_wins_within_a_batch_across_batches_and_runs(repo, dwh_conn):
    seed(
        repo,
        [
            (2, person("7", Gender="Male", source="ads"), T0 + timedelta(minutes=5)),
            (1, person("7", Gender="Female"), T0),
            (3, person("8", cohort_week=1), T0 + timedelta(minutes=6)),
            (4, person("8", cohort_week=2), T0 + timedelta(minutes=7)),
        ],
    )
    migrate_user_properties(repo, batch_size=3)
    seed(repo, [(5, person("7", Gender="Other"), T0 - timedelta(days=1))])
    later = migrate_user_properties(repo)
    # An older event arriving late is the earliest: it replaces person 7's permanent row.
    assert later.processed == 1 and later.permanent_inserted == 1
    assert later.rederived_people == 1
    assert fetch(
        dwh_conn,
        "SELECT ehr_id, first_login_at, gender, cohort_week, source FROM permanent_user_properties "
        "ORDER BY ehr_id",
    ) == [
        (7, T0 - timedelta(days=1), "other", None, None),
        (8, T0 + timedelta(minutes=6), None, 1, None),
    ]


def test_since_until_select_whole_days_and_skip_empty_days(repo, dwh_conn):
    days = [datetime(2024, 3, d, 12) for d in (1, 2, 5, 9)]
    seed(repo, [(n, person(str(n), age=n), when) for n, when in enumerate(days, start=1)])
    result = migrate_user_properties(repo, since=date(2024, 3, 2), until="2024-03-05", batch_size=1)
    assert result.processed == 2
    assert (result.since, result.until) == ("2024-03-02T00:00:00", "2024-03-06T00:00:00")
    assert fetch(
        dwh_conn, "SELECT uuid FROM tmp_user_properties WHERE NOT migrated ORDER BY uuid"
    ) == [(uid(1),), (uid(4),)]
    assert migrate_user_properties(repo, until=date(2024, 3, 1)).processed == 1
    assert migrate_user_properties(repo, since="2024-03-09T15:00:00+03:00").processed == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "2024-03-05", "until": "2024-03-01"}, "must be before"),
        ({"since": "yesterday"}, "since must be a date"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"source": "ftp"}, "unknown source"),
        ({"source": "s3"}, "needs `store`"),
    ],
)
def test_bad_arguments(repo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        migrate_user_properties(repo, **kwargs)


def test_rejects_are_recorded_stay_pending_and_are_retried(repo, dwh_conn):
    seed(
        repo,
        [
            (1, person("7", age=30), T0),
            (2, person("7", age="old", registered_via_app="yes"), T0 + timedelta(minutes=1)),
            (3, person("abc"), T0 + timedelta(minutes=2)),
            (4, person("8", age=40), T0 + timedelta(minutes=3)),
        ],
    )
    result = migrate_user_properties(repo, batch_size=3)
    # an invalid age or registered_via_app costs the value (NULL, reported), an invalid
    # EHR_ID (the person, on_invalid: reject) the record
    assert (result.processed, result.rejected, result.rejected_before) == (3, 1, 0)
    assert result.values_nulled == 2 and result.values_repaired == 0
    assert result.new_reject_ratio == 0.25
    assert result.error_keys == {"EHR_ID": 1}
    assert fetch(
        dwh_conn, "SELECT uuid FROM tmp_user_properties WHERE NOT migrated ORDER BY uuid"
    ) == [(uid(3),)]
    assert fetch(
        dwh_conn, "SELECT age FROM changeable_user_properties WHERE uuid = %s", uid(2)
    ) == [(None,)]
    rejects = fetch(
        dwh_conn,
        "SELECT source, s3_key, record_id, kind, table_name, column_name, value, reason, raw "
        "FROM load_rejects ORDER BY record_id, column_name",
    )
    assert [row[:7] for row in rejects] == [
        (REJECT_SOURCE, None, str(uid(2)), "value", "changeable_user_properties", "age", "old"),
        (
            REJECT_SOURCE,
            None,
            str(uid(2)),
            "value",
            "permanent_user_properties",
            "registered_via_app",
            "yes",
        ),
        (REJECT_SOURCE, None, str(uid(3)), "record", "changeable_user_properties", "ehr_id", "abc"),
    ]
    assert "age='old': age: no match for extract_regex" in rejects[0][7]
    assert rejects[2][8]["errors"] == [
        {
            "key": "EHR_ID",
            "value": "abc",
            "reason": "ehr_id: not an integer (ASCII digits with an optional sign)",
        }
    ]

    again = migrate_user_properties(repo)
    assert (again.processed, again.rejected, again.rejected_before) == (0, 1, 1)
    assert again.new_reject_ratio == 0.0 and again.values_nulled == 0
    assert fetch(dwh_conn, "SELECT kind, count(*) FROM load_rejects GROUP BY kind ORDER BY 1") == [
        ("record", 1),
        ("value", 2),
    ]

    data = copy.deepcopy(yaml.safe_load(DEFAULT_MAPPING_PATH.read_text(encoding="utf-8")))
    data["ehr_id"]["null_values"].append("abc")
    fixed = migrate_user_properties(repo, mapping=parse_field_mappings(data))
    assert (fixed.processed, fixed.rejected) == (1, 0)
    assert fetch(dwh_conn, "SELECT kind, count(*) FROM load_rejects GROUP BY kind") == [
        ("value", 2)
    ]
    assert fetch(dwh_conn, "SELECT count(*) FROM tmp_user_properties WHERE NOT migrated") == [(0,)]
    assert fetch(
        dwh_conn, "SELECT registered_via_app FROM permanent_user_properties WHERE ehr_id = 7"
    ) == [(None,)]  # the first event (uuid 1) won


def test_unknown_keys_are_counted_and_strict_rejects_them(repo, dwh_conn):
    seed(
        repo,
        [
            (1, person("7", **{"Ehr Count": 1, "google_pay_available": True}), T0),
            (2, person("8", **{"Ehr Count": 2}), T0 + timedelta(minutes=1)),
        ],
    )
    strict = migrate_user_properties(repo, strict=True)
    assert (strict.processed, strict.rejected) == (0, 2)
    assert strict.unknown_keys == {"Ehr Count": 2, "google_pay_available": 1}
    lenient = migrate_user_properties(repo)
    assert (lenient.processed, lenient.rejected) == (2, 0)
    assert lenient.unknown_keys == {"Ehr Count": 2, "google_pay_available": 1}
    assert "unknown keys: Ehr Count=2, google_pay_available=1" in lenient.summary()
    json.dumps(lenient.to_dict())


def test_rows_without_event_time_are_rejected_not_lost(repo, dwh_conn):
    seed(repo, [(1, person("7"), None), (2, person("8"), T0)])
    result = migrate_user_properties(repo, batch_size=1)
    assert (result.processed, result.rejected) == (1, 1)
    assert fetch(dwh_conn, "SELECT record_id, reason FROM load_rejects") == [
        (str(uid(1)), "event_time=None: event_time: missing")
    ]
    assert migrate_user_properties(repo, since="2024-01-01").rejected == 0


def _many(n: int) -> list[tuple[int, dict, datetime]]:
    """n records of 4 people whose states change now and then, one a minute."""
    return [
        (
            i,
            person(str(i % 4), age=20 + (i // 7) % 3, Gender="Female" if i % 5 else "Male"),
            T0 + timedelta(minutes=i),
        )
        for i in range(1, n + 1)
    ]


def test_failure_in_the_middle_of_batch_two_then_rerun_is_identical(repo, dwh_conn):
    seed(repo, _many(30))
    migrate_user_properties(repo, batch_size=10)
    expected = snapshot(dwh_conn)
    assert len(expected["changeable"]) > 4
    reset(dwh_conn)

    # Batch 2 (rows 11-20) fails while inserting its changeable rows, after its permanent rows.
    changed = [row[0] for row in expected["changeable"]]
    victim = next(u for u in changed if 11 <= u.int <= 20)
    dwh_conn.execute(
        f"""CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.uuid = '{victim}' THEN RAISE EXCEPTION 'injected failure'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON changeable_user_properties
        FOR EACH ROW EXECUTE FUNCTION boom();"""
    )
    with pytest.raises(
        MigrationInterrupted, match="interrupted in batch 2.*injected failure"
    ) as info:
        migrate_user_properties(repo, batch_size=10)
    partial = info.value.result
    assert (partial.status, partial.batches, partial.processed) == ("interrupted", 1, 10)
    assert "injected failure" in partial.error
    assert fetch(dwh_conn, "SELECT count(*) FROM tmp_user_properties WHERE migrated") == [(10,)]
    assert fetch(
        dwh_conn,
        "SELECT count(*) FROM changeable_user_properties WHERE event_time > %s",
        T0 + timedelta(minutes=10),
    ) == [(0,)]
    assert fetch(dwh_conn, "SELECT max(first_login_at) FROM permanent_user_properties")[0][
        0
    ] <= T0 + timedelta(minutes=10)

    dwh_conn.execute("DROP TRIGGER boom ON changeable_user_properties")
    resumed = migrate_user_properties(repo, batch_size=10)
    assert resumed.processed == 20
    assert snapshot(dwh_conn) == expected


class _CrashBeforeCommit(Repository):
    """A repository whose process "dies" just before the second batch commits."""

    calls = 0

    def mark_migrated(self, uuids):
        type(self).calls += 1
        marked = super().mark_migrated(uuids)
        if type(self).calls == 2:
            raise RuntimeError("worker lost")
        return marked


def test_crash_after_all_writes_of_batch_two_leaves_nothing_of_it(dwh_conn):
    repo = _CrashBeforeCommit(dwh_conn)
    seed(repo, _many(25))
    migrate_user_properties(Repository(dwh_conn), batch_size=10)
    expected = snapshot(dwh_conn)
    reset(dwh_conn)
    with pytest.raises(MigrationInterrupted, match="worker lost"):
        migrate_user_properties(repo, batch_size=10)
    assert fetch(dwh_conn, "SELECT count(*) FROM tmp_user_properties WHERE migrated") == [(10,)]
    resumed = migrate_user_properties(repo, batch_size=10)
    assert (resumed.processed, resumed.batches) == (15, 2)
    assert snapshot(dwh_conn) == expected


def test_a_second_run_at_the_same_time_is_refused(repo, dwh_dsn):
    seed(repo, [(1, person("7"), T0)])
    with psycopg.connect(dwh_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(7461503505)")
        with pytest.raises(RunInProgress, match="another user-properties run"):
            migrate_user_properties(repo)
        other.execute("SELECT pg_advisory_unlock(7461503505)")
    assert migrate_user_properties(repo).processed == 1


def test_latest_states_follow_the_run_and_stay_bounded(repo, dwh_conn):
    seed(repo, [(1, person("7", age=30), T0), (2, person(None, age=5), T0)])
    migrate_user_properties(repo)
    latest = LatestStates(repo, capacity=2)
    latest.load({7, 8, None})
    assert len(latest._states) == 3  # never drops the people of the batch at hand
    with dwh_conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute("SELECT * FROM changeable_user_properties WHERE ehr_id = 7").fetchone()
    same = tuple(row[column] for column in CHANGEABLE_STATE_COLUMNS)
    assert latest.changed(7, same) is False
    assert latest.changed(8, (8, *same[1:])) is True
    assert latest.changed(8, (8, *same[1:])) is False
    latest.load({9})
    assert len(latest._states) == 2 and 9 in latest._states
