"""A sweep of malformed requests over every endpoint: each gets a 4xx with a JSON body, no 5xx."""

from __future__ import annotations

import pytest

WRITE = {"Authorization": "OAuth demo-write-token"}

pytestmark = [pytest.mark.db, pytest.mark.s3]

DB_TABLES = ["events-part", "permanent-user-properties", "user-properties", "user-locations"]

MALFORMED: list[tuple[str, str, dict]] = [
    ("GET", "/db/events-part", {"params": {"pk": "\x00"}}),
    ("GET", "/db/events-part", {"params": {"pk": "x" * 5000}}),
    ("GET", "/db/permanent-user-properties", {"params": {"pk": "1e400"}}),
    ("GET", "/db/permanent-user-properties", {"params": {"pk": "-9223372036854775809"}}),
    ("GET", "/db/events-part", {"params": {"limit": "9" * 40}}),
    ("GET", "/db/events-part", {"params": {"limit": "-1"}}),
    ("GET", "/db/events-part", {"params": {"sort_by": 'uuid"; --'}}),
    ("GET", "/db/events-part", {"params": {"sort_dir": "asc; DROP TABLE events_part"}}),
    ("GET", "/db/user-properties", {"params": {"migrated": "yes please"}}),
    ("GET", "/db/no-such-table", {}),
    *[("POST", f"/db/{table}", {"content": b"{not json"}) for table in DB_TABLES],
    *[("POST", f"/db/{table}", {"json": {"data": "rows"}}) for table in DB_TABLES],
    *[("POST", f"/db/{table}", {"json": {"data": [None, 1, "x"]}}) for table in DB_TABLES],
    *[("POST", f"/db/{table}", {"json": None}) for table in DB_TABLES],
    ("POST", "/db/events-part", {"json": {"data": [{"uuid": "x", "event_time": "2024-99-99"}]}}),
    ("POST", "/db/events-part", {"json": {"data": [{"uuid": 1, "event_time": []}]}}),
    (
        "POST",
        "/db/user-locations",
        {"json": {"data": [{"uuid": "6" * 32, "location_lat": "north"}]}},
    ),
    ("POST", "/db/technical-data", {"json": {"data": [{"uuid": "6" * 32, "amplitude_id": 2**70}]}}),
    (
        "POST",
        "/db/events-part",
        {"content": '{"data": ["\ud800"]}'.encode("utf-8", "surrogatepass")},
    ),
    (
        "POST",
        "/db/events-part",
        {"content": b"\xff\xfe\x00", "headers": {"Content-Type": "application/json"}},
    ),
    ("POST", "/db/events-part", {"content": b"a=1", "headers": {"Content-Type": "text/plain"}}),
    ("POST", "/db/events-part", {"content": b"{}", "headers": {"Content-Length": "abc"}}),
    ("DELETE", "/db/events-part", {}),
    ("GET", "/s3/object-info", {}),
    ("GET", "/s3/object-info", {"params": {"key": "a/../../b"}}),
    ("GET", "/s3/download", {"params": {"key": "\x7f"}}),
    ("GET", "/s3/objects", {"params": {"prefix": "x" * 2000}}),
    ("POST", "/s3/upload", {"params": {"key": "a"}, "content": b"not multipart"}),
    ("POST", "/s3/upload", {"params": {"key": "a"}, "data": {"file": "not a file"}}),
    ("PUT", "/s3/update", {"params": {"key": ""}, "files": {"file": b"x"}}),
    ("PATCH", "/s3/patch", {"params": {"key": "a", "offset": "x"}, "files": {"file": b"x"}}),
    ("PATCH", "/s3/patch", {"params": {"key": "a", "offset": "9" * 30}, "files": {"file": b"x"}}),
    ("PATCH", "/s3/patch", {"params": {"key": "a"}, "files": {"file": b"x"}}),
    ("DELETE", "/s3/delete", {"params": {"key": "//"}}),
    ("GET", "/amplitude/export", {}),
    (
        "GET",
        "/amplitude/export",
        {"params": {"start": "99999999", "end": "99999999", "source": "web"}},
    ),
    (
        "GET",
        "/amplitude/export",
        {"params": {"start": "00010101", "end": "00010101", "source": "web"}},
    ),
    (
        "GET",
        "/amplitude/export",
        {"params": {"start": "2024050１", "end": "20240501", "source": "web"}},
    ),
    ("GET", "/appmetrica/export", {}),
    ("GET", "/appmetrica/export", {"params": {"date_since": "0000-00-00", "date_until": "x"}}),
    (
        "GET",
        "/appmetrica/export",
        {"params": {"date_since": "2024-05-01 25:00:00", "date_until": "2024-05-01"}},
    ),
    (
        "GET",
        "/appmetrica/export",
        {"params": {"date_since": "2024-05-01", "date_until": "2024-05-01", "fields": ",,,"}},
    ),
    (
        "GET",
        "/appmetrica/export",
        {
            "params": {
                "date_since": "2024-05-01",
                "date_until": "2024-05-01",
                "application_id": "１２３",
            }
        },
    ),
    (
        "GET",
        "/appmetrica/export",
        {"params": {"date_since": "2024-05-01", "date_until": "2024-05-01", "resource": "../x"}},
    ),
    ("POST", "/transform/user-properties", {"content": b"[]"}),
    (
        "POST",
        "/transform/user-properties",
        {"json": {"source": "s3", "key": "k", "start_after": "x"}},
    ),
    (
        "POST",
        "/transform/user-properties",
        {"json": {"source": "tmp_table", "since": "9999-12-31", "until": "9999-12-31"}},
    ),
    ("GET", "/transform/user-properties", {}),
    ("GET", "/health/../db/events-part", {}),
]


@pytest.fixture
def sweep_client(settings, amplitude_settings, appmetrica_settings, api_settings, make_client):
    settings.amplitude = amplitude_settings
    settings.appmetrica = appmetrica_settings
    with make_client(settings, api_settings) as client:
        yield client


def test_no_malformed_request_gets_a_5xx(sweep_client):
    failures = []
    for method, path, options in MALFORMED:
        kwargs = dict(options)
        headers = {**WRITE, **kwargs.pop("headers", {})}
        response = sweep_client.request(method, path, headers=headers, **kwargs)
        if not 400 <= response.status_code < 500 and response.status_code != 200:
            failures.append((method, path, options, response.status_code, response.text[:200]))
        elif response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/json"), path
            assert response.json()["detail"], path
    for failure in failures:
        print("FAIL", failure)
    assert failures == []
