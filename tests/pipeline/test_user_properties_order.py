"""The user-properties tables do not depend on the order, grouping or repetition of arrivals.

The same events are loaded into tmp_user_properties in random orders and batches (some
batches delivered twice, as a retried load does), with an ETL run after each batch; the
tables must equal those of one in-order run over all of them. Real PostgreSQL throughout.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import TMP_USER_PROPERTIES
from dwh_helper.pipeline.user_properties import migrate_user_properties

pytestmark = pytest.mark.db

T0 = datetime(2024, 3, 1, 10, 0, 0)
TABLES = "tmp_user_properties, permanent_user_properties, changeable_user_properties, load_rejects"

# One event: (person, minute, gender, age, city). Few values, so ties and repeats are common.
EVENT = st.tuples(
    st.sampled_from(["100", "200", "300", None, "not-a-number"]),
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["female", "male"]),
    st.sampled_from(["20", "30"]),
    st.sampled_from(["SPB", "MSK"]),
)


def tmp_row(n: int, event: tuple) -> tuple:
    """A pending tmp_user_properties row (uuid n) for a generated event."""
    ehr, minute, gender, age, city = event
    props = {"EHR_ID": ehr, "Gender": gender, "Age": age, "app_city": city, "cohort_day": n}
    when = T0 + timedelta(minutes=minute)
    return (uuid.UUID(int=n * 7919 % 1000 + 1), json.dumps(props), "ru", n, "5.1", when, False)


def tables(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """The derived tables and which tmp rows are still pending, in a stable order."""
    return {
        "permanent": conn.execute(
            "SELECT * FROM permanent_user_properties ORDER BY ehr_id"
        ).fetchall(),
        "changeable": conn.execute(
            "SELECT * FROM changeable_user_properties ORDER BY uuid"
        ).fetchall(),
        "pending": conn.execute(
            "SELECT uuid FROM tmp_user_properties WHERE NOT migrated ORDER BY uuid"
        ).fetchall(),
    }


def in_order(repo: Repository, conn: psycopg.Connection, rows: list[tuple]) -> dict:
    """The tables of one run over every row, loaded at once."""
    conn.execute(f"TRUNCATE {TABLES}")
    repo.copy_rows(TMP_USER_PROPERTIES, rows)
    migrate_user_properties(repo)
    return tables(conn)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(EVENT, min_size=1, max_size=14),
    data=st.data(),
)
def test_random_orders_and_batches_equal_one_in_order_run(repo, dwh_conn, events, data):
    rows = [tmp_row(n, event) for n, event in enumerate(events, start=1)]
    rows = list({row[0]: row for row in rows}.values())
    expected = in_order(repo, dwh_conn, rows)

    dwh_conn.execute(f"TRUNCATE {TABLES}")
    order = data.draw(st.permutations(rows), label="arrival order")
    cuts = sorted(
        data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4), label="cuts")
    )
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    batch_size = data.draw(st.integers(1, 4), label="ETL batch size")
    for batch in batches:
        for _ in range(data.draw(st.integers(1, 2), label="deliveries")):
            repo.copy_rows(TMP_USER_PROPERTIES, batch)
            migrate_user_properties(repo, batch_size=batch_size)
    assert tables(dwh_conn) == expected


def test_a_late_older_event_rewrites_first_login_and_history(repo, dwh_conn):
    early = tmp_row(1, ("100", 0, "female", "20", "SPB"))
    later = [
        tmp_row(2, ("100", 2, "male", "30", "MSK")),
        tmp_row(3, ("100", 3, "male", "20", "MSK")),
    ]
    repo.copy_rows(TMP_USER_PROPERTIES, later)
    first = migrate_user_properties(repo)
    assert first.rederived_people == 0
    repo.copy_rows(TMP_USER_PROPERTIES, [early])
    second = migrate_user_properties(repo)

    assert second.rederived_people == 1
    permanent = dwh_conn.execute(
        "SELECT first_login_at, gender, cohort_day FROM permanent_user_properties"
    ).fetchall()
    assert permanent == [(T0, "female", 1)]
    history = dwh_conn.execute(
        "SELECT event_time, age FROM changeable_user_properties ORDER BY event_time"
    ).fetchall()
    assert history == [(T0, 20), (T0 + timedelta(minutes=2), 30), (T0 + timedelta(minutes=3), 20)]
    assert dwh_conn.execute(
        "SELECT count(*) FROM tmp_user_properties WHERE NOT migrated"
    ).fetchone() == (0,)


def test_a_late_event_with_the_same_state_removes_a_row(repo, dwh_conn):
    """A late row between two equal states: the later one is no longer a change."""
    repo.copy_rows(
        TMP_USER_PROPERTIES,
        [tmp_row(1, ("100", 0, "male", "20", "SPB")), tmp_row(3, ("100", 4, "male", "30", "SPB"))],
    )
    migrate_user_properties(repo)
    repo.copy_rows(TMP_USER_PROPERTIES, [tmp_row(2, ("100", 2, "male", "30", "SPB"))])
    migrate_user_properties(repo)
    history = dwh_conn.execute(
        "SELECT event_time, age FROM changeable_user_properties ORDER BY event_time"
    ).fetchall()
    assert history == [(T0, 20), (T0 + timedelta(minutes=2), 30)]
