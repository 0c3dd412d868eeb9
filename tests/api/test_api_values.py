"""Client input PostgreSQL would refuse is a 422 naming the field, never a 500 or a 503."""

from __future__ import annotations

import pytest

from dwh_helper.dwh.tables import DWH_TABLES

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "Bearer demo-write-token"}
U1 = "11111111-1111-1111-1111-111111111111"

TIMESTAMP_COLUMNS = [
    (url, column.name, column.not_null)
    for url, table in [
        ("events-part", "events_part"),
        ("user-properties", "tmp_user_properties"),
        ("permanent-user-properties", "permanent_user_properties"),
        ("changeable-user-properties", "changeable_user_properties"),
    ]
    for column in DWH_TABLES[table].columns
    if column.type == "timestamp"
]
BASE = {
    "events-part": {"uuid": U1, "event_time": "2024-05-01T00:00:00"},
    "user-properties": {"uuid": U1},
    "permanent-user-properties": {"ehr_id": 1, "first_login_at": "2024-05-01T00:00:00"},
    "changeable-user-properties": {"uuid": U1, "event_time": "2024-05-01T00:00:00"},
}


def _field_of(response) -> str:
    body = response.json()
    assert set(body) == {"detail", "errors"}
    return body["errors"][0]["field"]


@pytest.mark.db
@pytest.mark.parametrize(("url", "column", "not_null"), TIMESTAMP_COLUMNS)
@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_leaving_years_1_to_9999_are_422(client, url, column, not_null, edge):
    row = {**BASE[url], column: edge}
    response = client.post(f"/db/{url}", headers=WRITE, json={"data": [row]})
    assert response.status_code == 422, response.text
    assert _field_of(response) == f"data[0].{column}"
    assert "years 1-9999" in response.json()["detail"]


@pytest.mark.db
def test_the_last_utc_second_is_stored(client):
    row = {"uuid": U1, "event_time": "9999-12-31T23:59:59Z"}
    assert client.post("/db/events-part", headers=WRITE, json={"data": [row]}).status_code == 200
    rows = client.get("/db/events-part", headers=READ, params={"pk": U1}).json()["rows"]
    assert rows[0]["event_time"] == "9999-12-31T23:59:59Z"


@pytest.mark.db
def test_a_3000_character_device_id_is_422_not_503(client):
    response = client.post(
        "/db/mobile-devices", headers=WRITE, json={"data": [{"device_id": "d" * 3000}]}
    )
    assert response.status_code == 422, response.text
    assert _field_of(response) == "data[0].device_id"
    assert client.get("/db/mobile-devices", headers=READ).json()["count"] == 0


@pytest.mark.db
def test_a_key_of_multibyte_text_at_the_limit_is_stored(client):
    device = "ж" * 512  # 1,024 UTF-8 bytes: within the btree entry limit
    response = client.post(
        "/db/mobile-devices", headers=WRITE, json={"data": [{"device_id": device}]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["inserted_ids"] == [device]


@pytest.mark.db
def test_postgres_limit_error_is_422_naming_the_column(client, dwh_dsn):
    """A limit the models cannot know (an index added later) still maps to 422, not 503."""
    import psycopg

    with psycopg.connect(dwh_dsn, autocommit=True) as conn:
        conn.execute("CREATE INDEX mobile_devices_model_idx ON mobile_devices (device_model)")
    blob = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1000))  # 3,000 bytes
    response = client.post(
        "/db/mobile-devices",
        headers=WRITE,
        json={"data": [{"device_id": "d1", "device_model": blob}]},
    )
    assert response.status_code == 422, response.text
    assert "mobile_devices_model_idx" in response.json()["detail"]
    assert _field_of(response)


@pytest.mark.db
@pytest.mark.parametrize(
    ("url", "row", "field"),
    [
        ("user-locations", {"uuid": U1, "location_lat": "NaN"}, "location_lat"),
        ("user-locations", {"uuid": U1, "location_lng": "55.7"}, "location_lng"),
        (
            "permanent-user-properties",
            {**BASE["permanent-user-properties"], "registered_via_app": 0},
            "registered_via_app",
        ),
        (
            "permanent-user-properties",
            {**BASE["permanent-user-properties"], "registered_via_app": "true"},
            "registered_via_app",
        ),
        (
            "permanent-user-properties",
            {"ehr_id": "12", "first_login_at": "2024-05-01T00:00:00"},
            "ehr_id",
        ),
        (
            "permanent-user-properties",
            {"ehr_id": True, "first_login_at": "2024-05-01T00:00:00"},
            "ehr_id",
        ),
        ("mobile-devices", {"device_id": "a\u0000b"}, "device_id"),
        (
            "event-properties",
            {"uuid": U1, "event_properties_json": {"k": "a\u0000"}},
            "event_properties_json",
        ),
    ],
)
def test_values_postgres_would_refuse_or_coerce_are_422(client, url, row, field):
    response = client.post(f"/db/{url}", headers=WRITE, json={"data": [row]})
    assert response.status_code == 422, response.text
    assert _field_of(response) == f"data[0].{field}"


@pytest.mark.db
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_numbers_are_refused(client, literal):
    body = b'{"data": [{"uuid": "%s", "location_lat": %s}]}' % (U1.encode(), literal)
    response = client.post(
        "/db/user-locations",
        headers={**WRITE, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422, response.text
    assert client.get("/db/user-locations", headers=READ).json()["count"] == 0
    nested = b'{"data": [{"uuid": "%s", "event_properties_json": {"x": %s}}]}' % (
        U1.encode(),
        literal,
    )
    response = client.post(
        "/db/event-properties",
        headers={**WRITE, "Content-Type": "application/json"},
        content=nested,
    )
    assert response.status_code == 422, response.text
    assert _field_of(response) == "data[0].event_properties_json"
