"""`/appmetrica/*` over HTTP against the AppMetrica sandbox: files, 202 while preparing, errors."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import datetime

import pytest
from pydantic import SecretStr

from tests.support.fault_proxy import Fault, FaultProxy

READ = {"Authorization": "OAuth demo-read-token"}
FIELDS = "event_name,event_datetime,appmetrica_device_id,event_json"

pytestmark = pytest.mark.unit  # local HTTP stand-ins only: no PostgreSQL, no S3


@pytest.fixture
def am_settings(settings, appmetrica_settings):
    settings.appmetrica = appmetrica_settings
    return settings


@pytest.fixture
def am_client(am_settings, api_settings, make_client):
    api_settings = api_settings.model_copy(update={"appmetrica_max_attempts": 1})
    with make_client(am_settings, api_settings) as client:
        yield client


def _expected(sandbox, days: list[str], fields: str) -> list[dict]:
    rows = []
    for day in days:
        since = datetime.fromisoformat(f"{day} 00:00:00")
        until = datetime.fromisoformat(f"{day} 23:59:59")
        rows += sandbox.rows("events", "1111", since, until, fields.split(","))
    return rows


def _single_file(response) -> tuple[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        (name,) = archive.namelist()
        return name, archive.read(name)


def test_csv_export_of_two_days(am_client, appmetrica_sandbox):
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={"date_since": "2024-05-01", "date_until": "2024-05-02", "fields": FIELDS},
    )
    assert response.status_code == 200, response.text
    assert (
        'filename="appmetrica_1111_20240501_20240502.zip"'
        in response.headers["content-disposition"]
    )
    name, body = _single_file(response)
    assert name == "appmetrica_events_1111_20240501_20240502.csv"
    assert body.startswith(b"\xef\xbb\xbf") and body.count(b"\xef\xbb\xbf") == 1
    text = body.decode("utf-8-sig")
    assert text.count("event_name,event_datetime") == 1
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = _expected(appmetrica_sandbox, ["2024-05-01", "2024-05-02"], FIELDS)
    assert len(expected) >= 40
    assert rows == expected


def test_json_export_without_bom(am_client, appmetrica_sandbox):
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={
            "date_since": "2024-05-01",
            "date_until": "2024-05-03",
            "fields": FIELDS,
            "format": "json",
            "use_utf8_bom": "false",
            "application_id": "1111",
        },
    )
    assert response.status_code == 200, response.text
    name, body = _single_file(response)
    assert name.endswith(".json")
    data = json.loads(body)["data"]
    assert data == _expected(appmetrica_sandbox, ["2024-05-01", "2024-05-02", "2024-05-03"], FIELDS)


def test_202_while_preparing_then_the_file(
    am_settings, api_settings, make_client, appmetrica_sandbox
):
    api_settings = api_settings.model_copy(
        update={"appmetrica_wait_seconds": 0, "appmetrica_retry_after_seconds": 7}
    )
    params = {"date_since": "2024-05-01", "date_until": "2024-05-02", "fields": FIELDS}
    with make_client(am_settings, api_settings) as client:
        first = client.get("/appmetrica/export", headers=READ, params=params)
        assert first.status_code == 202
        assert first.headers["retry-after"] == "7"
        body = first.json()
        assert body["status"] == "preparing"
        assert body["pending_days"] == ["2024-05-01", "2024-05-02"]
        second = client.get("/appmetrica/export", headers=READ, params=params)
        assert second.status_code == 202
        third = client.get("/appmetrica/export", headers=READ, params=params)
    assert third.status_code == 200, third.text
    _, data = _single_file(third)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows == _expected(appmetrica_sandbox, ["2024-05-01", "2024-05-02"], FIELDS)


def test_never_more_than_three_queued_requests(am_client, appmetrica_sandbox):
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={"date_since": "2024-05-01", "date_until": "2024-05-06", "fields": "event_name"},
    )
    assert response.status_code == 200, response.text
    statuses = [request.status for request in appmetrica_sandbox.requests]
    assert 429 not in statuses
    assert statuses.count(200) == 6


def test_parts_when_a_day_is_too_large(am_client, appmetrica_sandbox):
    appmetrica_sandbox.faults.max_rows_per_part = 10
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={"date_since": "2024-05-01", "date_until": "2024-05-01", "fields": FIELDS},
    )
    assert response.status_code == 200, response.text
    _, data = _single_file(response)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    expected = _expected(appmetrica_sandbox, ["2024-05-01"], FIELDS)
    key = lambda row: (row["event_datetime"], row["appmetrica_device_id"], row["event_json"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected, key=key)
    assert any("parts_count" in request.params for request in appmetrica_sandbox.requests)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"date_since": "01.05.2024", "date_until": "2024-05-01"}, "date_since"),
        ({"date_since": "2024-05-01", "date_until": "2024-13-01"}, "date_until"),
        ({"date_since": "2024-05-02", "date_until": "2024-05-01"}, "date_until"),
        ({"date_since": "2024-01-01", "date_until": "2024-03-01"}, "date_until"),
        ({"date_since": "2024-05-01", "date_until": "2024-05-01", "fields": "x;drop"}, "fields"),
        (
            {"date_since": "2024-05-01", "date_until": "2024-05-01", "application_id": "1 or 1"},
            "application_id",
        ),
        ({"date_since": "2024-05-01", "date_until": "2024-05-01", "format": "xml"}, "format"),
        (
            {"date_since": "2024-05-01", "date_until": "2024-05-01", "date_dimension": "x"},
            "date_dimension",
        ),
        (
            {"date_since": "2024-05-01", "date_until": "2024-05-01", "use_utf8_bom": "perhaps"},
            "use_utf8_bom",
        ),
        ({"date_since": "2024-05-01"}, "date_until"),
    ],
)
def test_bad_parameters_are_422(am_client, appmetrica_sandbox, params, field):
    response = am_client.get("/appmetrica/export", headers=READ, params=params)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert appmetrica_sandbox.export_calls == 0


def test_application_without_access_is_422_naming_it(am_client):
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={"date_since": "2024-05-01", "date_until": "2024-05-01", "application_id": "3333"},
    )
    assert response.status_code == 422
    assert "3333" in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == "application_id"


def test_export_with_a_wrong_token_is_502(am_settings, api_settings, make_client):
    am_settings.appmetrica = am_settings.appmetrica.model_copy(update={"token": SecretStr("bad")})
    with make_client(am_settings, api_settings) as client:
        response = client.get(
            "/appmetrica/export",
            headers=READ,
            params={"date_since": "2024-05-01", "date_until": "2024-05-01"},
        )
    assert response.status_code == 502
    assert "token" in response.json()["detail"]


def test_server_errors_are_503(am_client, appmetrica_sandbox):
    appmetrica_sandbox.faults.server_error_first = 3
    response = am_client.get(
        "/appmetrica/export",
        headers=READ,
        params={"date_since": "2024-05-01", "date_until": "2024-05-01"},
    )
    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_upstream_retry_after_is_passed_on_with_the_503(
    am_settings, api_settings, make_client, appmetrica_sandbox
):
    faults = [Fault(503, {"Retry-After": "42"}, "Service Unavailable")]
    with FaultProxy(appmetrica_sandbox.url, faults) as proxy:
        am_settings.appmetrica = am_settings.appmetrica.model_copy(update={"base_url": proxy.url})
        api_settings = api_settings.model_copy(update={"appmetrica_max_attempts": 1})
        with make_client(am_settings, api_settings) as client:
            response = client.get(
                "/appmetrica/export",
                headers=READ,
                params={"date_since": "2024-05-01", "date_until": "2024-05-01"},
            )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "42"
    assert "HTTP 503" in response.json()["detail"]


def test_ping(am_client, appmetrica_sandbox):
    body = am_client.get("/appmetrica/ping", headers=READ).json()
    assert body["reachable"] is True and body["enabled"] is True
    assert body["application_ids"] == ["1111"]
    appmetrica_sandbox.faults.status_enabled = False
    assert am_client.get("/appmetrica/ping", headers=READ).json()["enabled"] is False


def test_ping_with_a_wrong_token_is_502(am_settings, api_settings, make_client):
    am_settings.appmetrica = am_settings.appmetrica.model_copy(update={"token": SecretStr("bad")})
    with make_client(am_settings, api_settings) as client:
        response = client.get("/appmetrica/ping", headers=READ)
    assert response.status_code == 502
    assert "bad" not in response.json()["detail"].split()


def test_unconfigured_token_is_503(settings, api_settings, make_client):
    with make_client(settings, api_settings) as client:
        response = client.get("/appmetrica/ping", headers=READ)
    assert response.status_code == 503
    assert "APPMETRICA_TOKEN" in response.json()["detail"]
