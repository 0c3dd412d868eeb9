"""`/transform/user-properties` over HTTP on the real PostgreSQL and moto's S3."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
from psycopg.types.json import Jsonb

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "OAuth demo-write-token"}

pytestmark = [pytest.mark.db, pytest.mark.s3]


def _props(ehr: str, age: str) -> dict:
    return {"EHR_ID": ehr, "Gender": "Female", "age": age, "google_pay_available": True}


def _event(number: int, ehr: str, age: str) -> dict:
    return {
        "uuid": str(uuid.UUID(int=number)),
        "event_time": f"2024-05-01 10:00:{number:02d}.000000",
        "user_properties": _props(ehr, age),
        "language": "Russian",
        "session_id": 100 + number,
        "start_version": "5.1.0",
    }


def _seed_tmp(dwh_conn) -> None:
    for number, (ehr, age) in enumerate([("42", "30"), ("42", "30"), ("42", "31 год")], start=1):
        dwh_conn.execute(
            "INSERT INTO tmp_user_properties (uuid, user_properties_json, language, event_time) "
            "VALUES (%s, %s, 'ru', %s)",
            (str(uuid.UUID(int=number)), Jsonb(_props(ehr, age)), f"2024-05-01T10:00:0{number}"),
        )


def test_tmp_table_run(client, dwh_conn):
    _seed_tmp(dwh_conn)
    response = client.post(
        "/transform/user-properties",
        headers=WRITE,
        json={"source": "tmp_table", "since": "2024-05-01", "until": "2024-05-01"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["processed"] == 3 and body["rejected"] == 0
    assert body["permanent_inserted"] == 1
    assert body["changeable_inserted"] == 2
    assert body["unknown_keys"] == {"google_pay_available": 3}
    assert body["resume"] is None
    history = client.get("/db/changeable-user-properties", headers=READ, params={"pk": 42}).json()[
        "rows"
    ]
    assert [row["age"] for row in history] == [31, 30]
    pending = client.get("/db/user-properties", headers=READ, params={"migrated": "false"})
    assert pending.json()["count"] == 0


def test_s3_run_reports_the_last_line(client, store):
    lines = [json.dumps(_event(number, "7", "20")) for number in range(1, 6)]
    store.client.put_object(
        Bucket=store.bucket, Key="up/day.ndjson", Body="\n".join(lines).encode()
    )
    response = client.post(
        "/transform/user-properties",
        headers=WRITE,
        json={"source": "s3", "key": "up/day.ndjson", "start_after": 2, "batch_size": 2},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["processed"] == 3 and body["last_line"] == 5 and body["batches"] == 2
    assert body["permanent_inserted"] == 1 and body["changeable_inserted"] == 1


def test_run_counts_values_nulled_and_repaired(client, store, dwh_conn):
    """A bad non-key value is stored NULL and reported, a NUL is removed: both counted."""
    events = [_event(1, "8", "many years"), _event(2, "9", "40")]
    events[1]["language"] = "Rus\u0000sian"
    store.client.put_object(
        Bucket=store.bucket,
        Key="up/dirty.ndjson",
        Body="\n".join(json.dumps(event) for event in events).encode(),
    )
    response = client.post(
        "/transform/user-properties", headers=WRITE, json={"source": "s3", "key": "up/dirty.ndjson"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["processed"] == 2 and body["rejected"] == 0
    assert body["values_nulled"] == 1 and body["values_repaired"] == 1
    rows = dwh_conn.execute(
        "SELECT ehr_id, age, language FROM changeable_user_properties "
        "WHERE ehr_id IN (8, 9) ORDER BY ehr_id"
    ).fetchall()
    assert rows == [(8, None, "Russian"), (9, 40, "Russian")]


def test_interrupted_run_is_200_with_where_to_resume(client, store):
    lines = "\n".join(json.dumps(_event(number, "7", str(20 + number))) for number in range(1, 40))
    packed = gzip.compress(lines.encode())
    store.client.put_object(Bucket=store.bucket, Key="up/cut.ndjson.gz", Body=packed[:-40])
    response = client.post(
        "/transform/user-properties",
        headers=WRITE,
        json={"source": "s3", "key": "up/cut.ndjson.gz", "batch_size": 5},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "interrupted"
    assert body["error"]
    assert body["resume"] == {
        "source": "s3",
        "key": "up/cut.ndjson.gz",
        "start_after": body["last_line"] or 0,
        "batch_size": 5,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "tmp_table"}, "body"),
        ({"source": "tmp_table", "since": "2024-05-02", "until": "2024-05-01"}, "body"),
        ({"source": "tmp_table", "since": "01.05.2024", "until": "2024-05-01"}, "since"),
        ({"source": "tmp_table", "since": "2024-01-01", "until": "2024-03-01"}, "until"),
        ({"source": "s3"}, "body"),
        ({"source": "s3", "key": "a", "start_after": -1}, "start_after"),
        ({"source": "kafka"}, "source"),
        ({"source": "s3", "key": "a", "batch_size": 0}, "batch_size"),
        ({"source": "s3", "key": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_are_422(client, body, field):
    response = client.post("/transform/user-properties", headers=WRITE, json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


def test_missing_s3_key_is_404(client):
    response = client.post(
        "/transform/user-properties", headers=WRITE, json={"source": "s3", "key": "nope.ndjson"}
    )
    assert response.status_code == 404


def test_readers_cannot_run_it(client):
    response = client.post(
        "/transform/user-properties",
        headers=READ,
        json={"source": "tmp_table", "since": "2024-05-01", "until": "2024-05-01"},
    )
    assert response.status_code == 403
