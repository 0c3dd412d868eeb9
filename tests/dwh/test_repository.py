"""Repository against the real PostgreSQL server: round trips, chunking, conflicts, select."""

from __future__ import annotations

import uuid
from datetime import datetime
from ipaddress import ip_address

import psycopg
import pytest

from dwh_helper.dwh.copy_text import copy_line
from dwh_helper.dwh.pages import select_page
from dwh_helper.dwh.repository import InvalidQuery, Repository, rows_per_statement
from dwh_helper.dwh.tables import DWH_TABLES, get_table

pytestmark = pytest.mark.db

U1, U2, U3 = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
T0 = datetime(2024, 3, 2, 0, 57, 33, 8000)

SAMPLES: dict[str, dict] = {
    "mobile_devices": {
        "device_id": "1963dcf7-085b-48df-b629-4c087db9dcfcR-with-a-much-longer-suffix-than-forty",
        "device_brand": "samsung",
        "device_carrier": "МТС",
        "device_family": "Samsung Phone",
        "device_manufacturer": "samsung",
        "device_model": "SM-A525F",
        "device_type": "Galaxy A52",
    },
    "events_part": {
        "uuid": U1,
        "event_type": "покупка",
        "event_time": T0,
        "user_id": 2**40,
        "platform": "Android",
        "device_id": None,
        "event_id": 2**33,
        "language": "Russian",
        "os_name": "android",
        "os_version": "13",
        "session_id": 1709341053000,
        "start_version": "5.1.0",
        "version_name": "5.4.2",
    },
    "technical_data": {
        "uuid": U1,
        "insert_id": "5f0c1a2e",
        "amplitude_attribution_ids": ["a", "б"],
        "amplitude_id": 384783353938,
        "is_attribution_event": "false",
        "library": "amplitude-android/2.39.0",
        "group_properties_json": {"город": "Москва"},
        "groups_json": {},
        "plan_json": {"branch": "main", "nested": {"x": [1, 2.5, None]}},
    },
    "tmp_event_properties": {"uuid": U1, "event_properties_json": {"экран": "оплата", "items": 3}},
    "tmp_user_properties": {
        "uuid": U1,
        "user_properties_json": {"EHR_ID": "155683", "Age": "34 года"},
        "language": "Russian",
        "session_id": -1,
        "start_version": "5.1.0",
        "event_time": T0,
        "migrated": True,
    },
    "user_locations": {
        "uuid": U1,
        "location_lat": 55.7558,
        "location_lng": 37.6173,
        "city": "Москва",
        "country": "Russia",
        "ip_address": "2a02:6b8::feed:0ff",
        "region": "Moscow",
    },
    "permanent_user_properties": {
        "ehr_id": 2**45,
        "first_login_at": T0,
        "gender": "female",
        "cohort_day": 12,
        "cohort_week": 2,
        "cohort_month": 1,
        "registered_via_app": False,
        "source": "ads",
    },
    "changeable_user_properties": {
        "uuid": U1,
        "ehr_id": 155683,
        "event_time": T0,
        "language": "Russian",
        "age": 34,
        "app_city": "Санкт-Петербург",
        "push_permission": True,
        "location_permission": None,
        "authorization_status": False,
        "telemed_files_sent": 1,
        "appointments_cancelled": 0,
        "telemed_files_received": 2,
        "telemed_messages_received": 3,
        "telemed_messages_sent": 4,
        "telemed_consultations_resumed": 5,
        "appointments_booked": 6,
        "session_id": 1709341053000,
        "start_version": "5.1.0",
    },
}


def _normalise(table: str, row: dict) -> dict:
    out = dict(row)
    for key, value in out.items():
        if isinstance(value, uuid.UUID):
            out[key] = str(value)
        if key == "ip_address" and value is not None:
            out[key] = str(ip_address(str(value)))
    return out


def test_samples_cover_every_table_and_column():
    for name, spec in DWH_TABLES.items():
        assert set(SAMPLES[name]) == set(spec.column_names), name


@pytest.mark.parametrize("table", list(SAMPLES))
def test_every_column_round_trips_through_insert_batch(repo: Repository, table: str):
    result = repo.insert_batch(table, [SAMPLES[table]])
    assert result.count == 1 and result.batches == 1
    (row,) = select_page(repo, table).rows
    assert _normalise(table, row) == _normalise(table, SAMPLES[table])


@pytest.mark.parametrize("table", list(SAMPLES))
def test_every_column_round_trips_through_copy_rows(repo: Repository, table: str):
    spec = DWH_TABLES[table]
    values = tuple(SAMPLES[table][name] for name in spec.column_names)
    assert repo.copy_rows(table, [values]) == 1
    assert repo.copy_rows(table, [values]) == 0, "a second load of the same key inserts nothing"
    (row,) = select_page(repo, table).rows
    assert _normalise(table, row) == _normalise(table, SAMPLES[table])


def test_ipv4_and_bigint_beyond_int4(repo: Repository):
    repo.insert_batch("user_locations", [{"uuid": U2, "ip_address": "95.24.1.10"}])
    repo.insert_batch("events_part", [{"uuid": U2, "event_time": T0, "user_id": 2**31 + 7}])
    assert str(select_page(repo, "user_locations", pk=U2).rows[0]["ip_address"]) == "95.24.1.10"
    assert select_page(repo, "events_part", pk=U2).rows[0]["user_id"] == 2**31 + 7


def test_rows_per_statement_formula():
    assert rows_per_statement(13) == 4032  # floor(65535 / 13 * 0.8)
    assert rows_per_statement(7, safety_factor=1.0) == 9362
    assert rows_per_statement(7, max_rows=100) == 100
    assert rows_per_statement(7, max_params=70, safety_factor=1.0) == 10


def _devices(n: int, start: int = 0) -> list[dict]:
    return [{"device_id": f"dev-{i:05d}", "device_brand": "b"} for i in range(start, start + n)]


@pytest.mark.parametrize(
    ("rows", "batches"), [(1, 1), (10, 1), (11, 2), (20, 2), (21, 3), (95, 10)]
)
def test_chunk_boundaries(dwh_conn, rows: int, batches: int):
    # two columns given, 20 parameters allowed -> exactly 10 rows per statement
    repo = Repository(dwh_conn, max_params=20, safety_factor=1.0)
    result = repo.insert_batch("mobile_devices", _devices(rows))
    assert (result.count, result.batches) == (rows, batches)
    assert len(select_page(repo, "mobile_devices", limit=1000).rows) == rows


def test_chunks_stay_under_postgres_parameter_limit(repo: Repository):
    rows = [
        {"uuid": str(uuid.UUID(int=i)), "event_time": T0, "event_type": "e"} for i in range(70000)
    ]
    result = repo.insert_batch("events_part", rows)
    assert result.count == 70000
    assert result.batches == -(-70000 // rows_per_statement(3))


def test_conflicts_are_skipped_and_not_returned(repo: Repository):
    repo.insert_batch("mobile_devices", _devices(3))
    result = repo.insert_batch("mobile_devices", _devices(5))  # 3 known + 2 new
    assert sorted(result.inserted_ids) == ["dev-00003", "dev-00004"]
    assert result.count == 2


def test_permanent_first_value_wins(repo: Repository):
    first = {"ehr_id": 7, "first_login_at": T0, "gender": "female"}
    later = {"ehr_id": 7, "first_login_at": datetime(2025, 1, 1), "gender": "male"}
    repo.insert_batch("permanent_user_properties", [first, later])
    (row,) = select_page(repo, "permanent_user_properties", pk=7).rows
    assert (row["gender"], row["first_login_at"]) == ("female", T0)


def test_failure_in_a_later_chunk_leaves_nothing(dwh_conn):
    repo = Repository(dwh_conn, max_params=20, safety_factor=1.0)  # 10 rows per statement
    rows = [{"ehr_id": i, "first_login_at": T0} for i in range(25)]
    rows[22]["first_login_at"] = None  # NOT NULL violation in the third chunk
    with pytest.raises(psycopg.errors.NotNullViolation):
        repo.insert_batch("permanent_user_properties", rows)
    assert select_page(repo, "permanent_user_properties").rows == []


def test_missing_columns_take_defaults(repo: Repository):
    repo.insert_batch("tmp_user_properties", [{"uuid": U3, "event_time": T0}])
    assert select_page(repo, "tmp_user_properties", pk=U3).rows[0]["migrated"] is False


def test_unknown_column_in_insert_is_refused(repo: Repository):
    with pytest.raises(InvalidQuery, match="unknown columns.*'colour'"):
        repo.insert_batch("mobile_devices", [{"device_id": "x", "colour": "red"}])


def test_select_filters_sorts_and_bounds(dwh_conn):
    repo = Repository(dwh_conn, default_limit=3, max_limit=5)
    repo.insert_batch(
        "mobile_devices",
        [{"device_id": f"d{i}", "device_brand": brand} for i, brand in enumerate("cabed")],
    )
    assert [r["device_id"] for r in select_page(repo, "mobile_devices").rows] == ["d0", "d1", "d2"]
    assert [
        r["device_brand"]
        for r in select_page(
            repo, "mobile_devices", sort_by="device_brand", sort_dir="desc", limit=5
        ).rows
    ] == list("edcba")
    assert select_page(repo, "mobile_devices", pk="d3").rows[0]["device_brand"] == "e"
    assert select_page(repo, "mobile_devices", pk="nope").rows == []
    with pytest.raises(InvalidQuery) as error:
        select_page(repo, "mobile_devices", limit=6)
    assert error.value.field == "limit"
    with pytest.raises(InvalidQuery):
        select_page(repo, "mobile_devices", limit=0)


@pytest.mark.parametrize("bad", ["colour", "device_id; DROP TABLE mobile_devices", '"device_id"'])
def test_select_unknown_sort_column_lists_valid_ones(repo: Repository, bad: str):
    with pytest.raises(InvalidQuery) as error:
        select_page(repo, "mobile_devices", sort_by=bad)
    assert error.value.field == "sort_by"
    assert "valid: device_id, device_brand" in str(error.value)


def test_select_pk_of_the_wrong_type(repo: Repository):
    with pytest.raises(InvalidQuery, match="pk: 'x' OR 1=1' is not a uuid|pk: .* is not a uuid"):
        select_page(repo, "events_part", pk="x' OR 1=1")
    with pytest.raises(InvalidQuery, match="not an integer"):
        select_page(repo, "permanent_user_properties", pk="12abc")


def test_migrated_filter_only_on_tmp_user_properties(repo: Repository):
    repo.insert_batch(
        "tmp_user_properties",
        [{"uuid": U1, "event_time": T0, "migrated": True}, {"uuid": U2, "event_time": T0}],
    )
    pending = select_page(repo, "tmp_user_properties", migrated=False).rows
    assert [str(r["uuid"]) for r in pending] == [U2]
    with pytest.raises(InvalidQuery, match="migrated"):
        select_page(repo, "mobile_devices", migrated=True)


def test_changeable_history_newest_first_and_latest_state(repo: Repository):
    base = SAMPLES["changeable_user_properties"]
    rows = [
        {
            **base,
            "uuid": str(uuid.UUID(int=10 + i)),
            "event_time": datetime(2024, 3, 1 + i),
            "age": 30 + i,
        }
        for i in range(3)
    ]
    rows.append({**base, "uuid": str(uuid.UUID(int=99)), "ehr_id": None, "age": 50})
    repo.insert_batch("changeable_user_properties", rows)
    history = select_page(repo, "changeable_user_properties", pk=155683).rows
    assert [r["age"] for r in history] == [32, 31, 30]
    latest = repo.latest_changeable([155683, None, 42])
    assert latest[155683]["age"] == 32
    assert latest[None]["age"] == 50
    assert 42 not in latest


def test_mark_migrated_counts_only_changes(repo: Repository):
    repo.insert_batch("tmp_user_properties", [{"uuid": u, "event_time": T0} for u in (U1, U2, U3)])
    assert repo.mark_migrated([U1, U2]) == 2
    assert repo.mark_migrated([U1]) == 0
    assert {
        str(r["uuid"]) for r in select_page(repo, "tmp_user_properties", migrated=False).rows
    } == {U3}


def test_copy_rows_in_one_transaction_with_other_writes(repo: Repository):
    spec = DWH_TABLES["mobile_devices"]
    with pytest.raises(RuntimeError):
        with repo.transaction():
            repo.copy_rows(spec, [("a", None, None, None, None, None, None)])
            raise RuntimeError("boom")
    assert select_page(repo, "mobile_devices").rows == []


def test_copy_rows_direct_inserts_straight_and_a_conflict_leaves_nothing(repo: Repository):
    rows = [(uuid.UUID(U1), T0, False), (uuid.UUID(U2), T0, False)]
    table = "tmp_user_properties"

    def tmp_rows(items):
        return [(u, None, None, None, None, when, migrated) for u, when, migrated in items]

    assert repo.copy_rows(table, tmp_rows(rows), direct=True) == 2
    with pytest.raises(psycopg.errors.UniqueViolation):
        repo.copy_rows(table, tmp_rows([(uuid.UUID(U3), T0, False), rows[0]]), direct=True)
    found = select_page(repo, table).rows
    assert sorted(str(r["uuid"]) for r in found) == [U1, U2]  # U3 rolled back with the conflict
    assert repo.copy_rows(table, tmp_rows([(uuid.UUID(U3), T0, False), rows[0]])) == 1


def test_mark_migrated_takes_uuids_or_their_text_and_names_a_bad_one(repo: Repository):
    repo.insert_batch("tmp_user_properties", [{"uuid": u, "event_time": T0} for u in (U1, U2, U3)])
    assert repo.mark_migrated([uuid.UUID(U1), U2]) == 2
    with pytest.raises(InvalidQuery, match="uuid: 'nope' is not a uuid"):
        repo.mark_migrated([U3, "nope"])
    assert [
        str(r["uuid"]) for r in select_page(repo, "tmp_user_properties", migrated=False).rows
    ] == [U3]


@pytest.mark.parametrize("direct", [False, True])
def test_copy_rows_binary_stores_what_text_stores(repo: Repository, direct: bool):
    spec = get_table("changeable_user_properties")

    def row(n: int) -> tuple:
        values = dict.fromkeys(spec.column_names)
        values.update(
            uuid=uuid.UUID(int=n),
            ehr_id=2**40,
            event_time=T0,
            language="ru\tRU \\ \n",
            age=-3,
            push_permission=False,
            location_permission=True,
            session_id=-(2**50),
            start_version="5.1",
        )
        return tuple(values[name] for name in spec.column_names)

    assert repo.copy_rows(spec, [row(1)]) == 1
    assert repo.copy_rows(spec, [row(2)], direct=direct, binary=True) == 1
    stored = {r["uuid"].int: r for r in select_page(repo, spec.name).rows}
    assert set(stored) == {1, 2}
    assert {k: v for k, v in stored[1].items() if k != "uuid"} == {
        k: v for k, v in stored[2].items() if k != "uuid"
    }
    assert stored[2]["language"] == "ru\tRU \\ \n" and stored[2]["age"] == -3


def test_copy_rows_binary_refuses_a_jsonb_table(repo: Repository):
    with pytest.raises(InvalidQuery, match="user_properties_json is jsonb"):
        repo.copy_rows("tmp_user_properties", [], binary=True)


@pytest.mark.parametrize("table", list(SAMPLES))
def test_copy_text_skipping_present_rows_stores_what_staging_stores(repo: Repository, table: str):
    """Every column of every table, cast from the text staging only for a row the table lacks;
    a column left out takes its default; a present key (or one twice in the lines) is skipped."""
    spec = DWH_TABLES[table]
    columns = [name for name in spec.column_names if spec.column(name).default is None]
    line = copy_line([SAMPLES[table][name] for name in columns]) + "\n"
    assert repo.copy_text(spec, columns, [line + line], skip_present=True) == 1
    assert repo.copy_text(spec, columns, [line], skip_present=True) == 0
    (row,) = select_page(repo, table).rows
    expected = dict(SAMPLES[table])
    for name in set(spec.column_names) - set(columns):
        expected[name] = False  # tmp_user_properties.migrated: DEFAULT false
    assert _normalise(table, row) == _normalise(table, expected)


def test_copy_text_skipping_present_rows_looks_each_key_up(repo: Repository, dwh_conn):
    """A batch meeting a table of thousands of rows costs an index lookup a row, not a read of
    the whole table (the planner's choice for a plain anti-join)."""
    spec = DWH_TABLES["tmp_event_properties"]
    keys = [uuid.UUID(int=n) for n in range(1, 3011)]
    present = [copy_line([key, {"n": key.int}]) + "\n" for key in keys[:3000]]
    assert repo.copy_text(spec, spec.column_names, present) == 3000
    dwh_conn.execute("ANALYZE tmp_event_properties")
    batch = [copy_line([key, {"n": -key.int}]) + "\n" for key in keys[1000:]]
    with repo.transaction() as conn:
        inserted = repo.copy_text(spec, spec.column_names, batch, skip_present=True)
        scans = conn.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "
            "WHERE relname = 'tmp_event_properties'"
        ).fetchone()
    assert inserted == 10
    assert scans[0] == 0 and scans[1] >= 2010
    stored = dict(dwh_conn.execute("SELECT uuid, event_properties_json FROM tmp_event_properties"))
    assert stored[keys[1500]] == {"n": 1501} and stored[keys[3005]] == {"n": -3006}


def test_copy_text_skipping_present_rows_raises_a_refused_value(repo: Repository):
    spec = DWH_TABLES["tmp_event_properties"]
    with pytest.raises(psycopg.DataError):
        repo.copy_text(spec, spec.column_names, [f"{U1}\t{{not json\n"], skip_present=True)
    assert select_page(repo, spec.name).rows == []
