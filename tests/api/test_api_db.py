"""`/db/<table>` over HTTP on the real PostgreSQL: POST then GET each table, and every refusal."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from dwh_helper.config import Settings

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "OAuth demo-write-token"}


U1 = "00000000-0000-4000-8000-000000000001"
U2 = "00000000-0000-4000-8000-000000000002"

SAMPLES: dict[str, tuple[dict, str, str]] = {
    # url name: (row, its key as returned, column to read back)
    "events-part": (
        {"uuid": U1, "event_type": "open", "event_time": "2024-05-01T10:00:00Z", "user_id": 7},
        U1,
        "event_type",
    ),
    "mobile-devices": ({"device_id": "dev-9", "device_model": "X1"}, "dev-9", "device_model"),
    "permanent-user-properties": (
        {"ehr_id": 42, "first_login_at": "2024-05-01T10:00:00", "gender": "f"},
        "42",
        "gender",
    ),
    "changeable-user-properties": (
        {"uuid": U1, "ehr_id": 42, "event_time": "2024-05-01T10:00:00", "age": 30},
        U1,
        "age",
    ),
    "technical-data": (
        {"uuid": U1, "insert_id": "i-1", "plan_json": {"branch": "main"}},
        U1,
        "plan_json",
    ),
    "event-properties": (
        {"uuid": U1, "event_properties_json": {"a": [1, 2]}},
        U1,
        "event_properties_json",
    ),
    "user-properties": (
        {"uuid": U1, "user_properties_json": {"EHR_ID": "42"}, "event_time": "2024-05-01T10:00:00"},
        U1,
        "user_properties_json",
    ),
    "user-locations": ({"uuid": U1, "city": "Moscow", "ip_address": "10.1.2.3"}, U1, "ip_address"),
}


@pytest.mark.db
@pytest.mark.unit  # the Yandex ID stand-in only
@pytest.mark.unit  # the Yandex ID stand-in only
@pytest.mark.unit  # the Yandex ID stand-in only
@pytest.mark.parametrize("table", list(SAMPLES))
def test_post_then_get_each_table(client, table):
    row, key, column = SAMPLES[table]
    response = client.post(f"/db/{table}", headers=WRITE, json={"data": [row]})
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted_ids": [key], "count": 1, "batches": 1}
    again = client.post(f"/db/{table}", headers=WRITE, json={"data": [row]})
    assert again.json() == {"inserted_ids": [], "count": 0, "batches": 1}
    body = client.get(f"/db/{table}", headers=READ, params={"pk": row.get("ehr_id", key)}).json()
    assert body["count"] == 1
    assert body["rows"][0][column] == row[column]


@pytest.mark.db
def test_event_time_with_a_zone_is_stored_as_utc(client):
    row = {"uuid": U2, "event_time": "2024-05-01T12:00:00+03:00"}
    assert client.post("/db/events-part", headers=WRITE, json={"data": [row]}).status_code == 200
    rows = client.get("/db/events-part", headers=READ, params={"pk": U2}).json()["rows"]
    assert rows[0]["event_time"] == "2024-05-01T09:00:00Z"


@pytest.mark.db
def test_get_sorts_limits_and_filters(client):
    data = [{"device_id": f"dev-{i}", "device_model": f"m{9 - i}"} for i in range(5)]
    assert (
        client.post("/db/mobile-devices", headers=WRITE, json={"data": data}).json()["count"] == 5
    )
    body = client.get(
        "/db/mobile-devices",
        headers=READ,
        params={"sort_by": "device_model", "sort_dir": "desc", "limit": 2},
    ).json()
    assert body["count"] == 2
    assert [row["device_model"] for row in body["rows"]] == ["m9", "m8"]
    assert (
        client.get("/db/mobile-devices", headers=READ, params={"pk": "dev-3"}).json()["rows"][0][
            "device_model"
        ]
        == "m6"
    )


@pytest.mark.db
def test_changeable_history_newest_first(client):
    data = [
        {
            "uuid": str(uuid.uuid4()),
            "ehr_id": 5,
            "event_time": f"2024-05-0{day}T00:00:00",
            "age": day,
        }
        for day in (1, 3, 2)
    ]
    client.post("/db/changeable-user-properties", headers=WRITE, json={"data": data})
    rows = client.get("/db/changeable-user-properties", headers=READ, params={"pk": 5}).json()[
        "rows"
    ]
    assert [row["age"] for row in rows] == [3, 2, 1]


@pytest.mark.db
def test_migrated_filter_on_user_properties_only(client, dwh_conn):
    data = [{"uuid": U1}, {"uuid": U2}]
    client.post("/db/user-properties", headers=WRITE, json={"data": data})
    dwh_conn.execute("UPDATE tmp_user_properties SET migrated = true WHERE uuid = %s", (U2,))
    rows = client.get("/db/user-properties", headers=READ, params={"migrated": "false"}).json()
    assert [row["uuid"] for row in rows["rows"]] == [U1]
    assert rows["rows"][0]["migrated"] is False
    response = client.get("/db/events-part", headers=READ, params={"migrated": "true"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "migrated"


@pytest.mark.db
def test_insert_is_chunked_into_batches(settings, api_settings, make_client):
    settings.db = settings.db.model_copy(update={"max_rows_per_insert": 10})
    data = [{"device_id": f"d{i}"} for i in range(25)]
    with make_client(settings, api_settings) as client:
        body = client.post("/db/mobile-devices", headers=WRITE, json={"data": data}).json()
    assert body["count"] == 25 and body["batches"] == 3
    assert sorted(body["inserted_ids"]) == sorted(row["device_id"] for row in data)


@pytest.mark.parametrize(
    ("table", "params", "field"),
    [
        ("mobile-devices", {"sort_by": "device_id; DROP TABLE mobile_devices"}, "sort_by"),
        ("mobile-devices", {"sort_by": "1"}, "sort_by"),
        ("events-part", {"sort_by": "event_time desc, (select 1)"}, "sort_by"),
        ("events-part", {"pk": "' OR ''='"}, "pk"),
        ("permanent-user-properties", {"pk": "1 OR 1=1"}, "pk"),
        ("permanent-user-properties", {"pk": "99999999999999999999"}, "pk"),
        ("mobile-devices", {"sort_dir": "sideways"}, "sort_dir"),
        ("mobile-devices", {"limit": "0"}, "limit"),
        ("mobile-devices", {"limit": "100000"}, "limit"),
        ("mobile-devices", {"limit": "ten"}, "limit"),
        ("user-properties", {"migrated": "maybe"}, "migrated"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_parameter(client, table, params, field):
    response = client.get(f"/db/{table}", headers=READ, params=params)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]


@pytest.mark.db
def test_non_iso_event_time_names_row_and_field(client):
    data = [
        {"uuid": U1, "event_time": "2024-05-01T10:00:00"},
        {"uuid": U2, "event_time": "01.05.2024 10:00"},
    ]
    response = client.post("/db/events-part", headers=WRITE, json={"data": data})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data[1].event_time"
    assert "ISO 8601" in response.json()["detail"]
    assert client.get("/db/events-part", headers=READ).json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": [{"device_id": "d", "colour": "red"}]}, "data[0].colour"),
        ({"data": [{"device_brand": "no key"}]}, "data[0].device_id"),
        ({"data": [{"device_id": None}]}, "data[0].device_id"),
        ({"data": [{"device_id": 5}]}, "data[0].device_id"),
        ({"rows": []}, "data"),
        ([1, 2], "body"),
    ],
)
def test_bad_rows_are_422_naming_the_field(client, body, field):
    response = client.post("/db/mobile-devices", headers=WRITE, json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("table", "row", "field"),
    [
        ("permanent-user-properties", {"ehr_id": 2**63, "first_login_at": "2024-01-01"}, "ehr_id"),
        (
            "changeable-user-properties",
            {"uuid": U1, "event_time": "2024-01-01", "age": 2**31},
            "age",
        ),
        ("user-locations", {"uuid": U1, "ip_address": "300.1.1.1"}, "ip_address"),
        ("events-part", {"uuid": "not-a-uuid", "event_time": "2024-01-01"}, "uuid"),
        ("events-part", {"uuid": U1, "event_time": 1714557600}, "event_time"),
        ("permanent-user-properties", {"ehr_id": True, "first_login_at": "2024-01-01"}, "ehr_id"),
    ],
)
def test_values_of_the_wrong_type_are_422(client, table, row, field):
    response = client.post(f"/db/{table}", headers=WRITE, json={"data": [row]})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == f"data[0].{field}"


@pytest.mark.db
def test_empty_list_is_422_and_too_many_rows_413(client):
    response = client.post("/db/mobile-devices", headers=WRITE, json={"data": []})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data"
    data = [{"device_id": f"d{i}"} for i in range(51)]
    response = client.post("/db/mobile-devices", headers=WRITE, json={"data": data})
    assert response.status_code == 413
    assert "API_DB_MAX_POST_ROWS=50" in response.json()["detail"]
    assert client.get("/db/mobile-devices", headers=READ).json()["count"] == 0


@pytest.mark.unit  # the Yandex ID stand-in only
def test_oversized_body_is_413(client):
    blob = "x" * (1024 * 1024 + 10)
    response = client.post(
        "/db/mobile-devices",
        headers=WRITE,
        json={"data": [{"device_id": "d", "device_model": blob}]},
    )
    assert response.status_code == 413
    assert "API_DB_MAX_BODY_MB" in response.json()["detail"]


@pytest.mark.db
def test_unknown_device_is_a_409_conflict(client):
    row = {"uuid": U1, "event_time": "2024-05-01T00:00:00", "device_id": "never-seen"}
    response = client.post("/db/events-part", headers=WRITE, json={"data": [row]})
    assert response.status_code == 409, response.text
    assert "events_part_device_id_fkey" in response.json()["detail"]
    assert client.get("/db/events-part", headers=READ).json()["count"] == 0


@pytest.mark.db
@pytest.mark.parametrize("max_limit", [3, 20000])
def test_limit_bound_follows_db_select_max_limit(settings, api_settings, clock, max_limit):
    """An app built with `DB_SELECT_MAX_LIMIT` declares that bound in OpenAPI and serves it."""
    db = settings.db.model_copy(update={"select_max_limit": max_limit})
    app = create_app(Settings(**(vars(settings) | {"db": db})), api_settings, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        operation = client.get("/openapi.json").json()["paths"]["/db/mobile-devices"]["get"]
        (limit,) = [param for param in operation["parameters"] if param["name"] == "limit"]
        assert [kind.get("maximum") for kind in limit["schema"]["anyOf"]] == [max_limit, None]
        data = [{"device_id": f"dev-{i}", "device_model": "m"} for i in range(5)]
        assert client.post("/db/mobile-devices", headers=WRITE, json={"data": data}).is_success
        full = client.get("/db/mobile-devices", headers=READ, params={"limit": max_limit})
        assert full.status_code == 200, full.text
        assert full.json()["count"] == min(max_limit, 5)
        over = client.get("/db/mobile-devices", headers=READ, params={"limit": max_limit + 1})
        assert over.status_code == 422, over.text
        assert [error["field"] for error in over.json()["errors"]] == ["limit"]
