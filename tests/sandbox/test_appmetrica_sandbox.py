"""The AppMetrica sandbox speaks the Logs API wire protocol and knows the truth about its data."""

from __future__ import annotations

import gzip
import json
from datetime import datetime

import httpx
import pytest

from devtools.sandbox.appmetrica import (
    AppMetricaFaults,
    AppMetricaSandbox,
    main,
    write_events_file,
)
from dwh_helper.sources.appmetrica import DEFAULT_FIELDS, ExportRequest
from tests.support.appmetrica_oracle import cast_record, iter_records

pytestmark = pytest.mark.unit

TOKEN = "sandbox-token"
EVENTS = "/logs/v1/export/events"


def params(day: int = 1, fields: str = "event_name,event_timestamp", **extra: str) -> dict:
    return {
        "application_id": "1111",
        "date_since": f"2024-03-{day:02d} 00:00:00",
        "date_until": f"2024-03-{day:02d} 23:59:59",
        "fields": fields,
    } | extra


@pytest.fixture
def sandbox():
    with AppMetricaSandbox(TOKEN, ("1111",), faults=AppMetricaFaults(ready_after=2)) as server:
        yield server


@pytest.fixture
def http(sandbox):
    with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"}) as client:
        yield client


def test_auth_is_checked(sandbox):
    with httpx.Client(base_url=sandbox.url) as anonymous:
        response = anonymous.get(f"{EVENTS}.csv", params=params())
        assert response.status_code == 401
        assert "Authorization: OAuth" in response.text
        wrong = anonymous.get(
            f"{EVENTS}.csv", params=params(), headers={"Authorization": "OAuth nope"}
        )
        assert wrong.status_code == 403
        query_token = anonymous.get(f"{EVENTS}.csv", params=params(oauth_token=TOKEN))
        assert query_token.status_code == 401  # only the header is accepted
        other_app = anonymous.get(
            f"{EVENTS}.csv",
            params=params() | {"application_id": "9999"},
            headers={"Authorization": f"OAuth {TOKEN}"},
        )
        assert other_app.status_code == 403
        assert "9999" in other_app.text
    assert sandbox.pending_jobs("1111") == 0


def test_202_sequence_then_200_per_distinct_request(sandbox, http):
    first = http.get(f"{EVENTS}.csv", params=params())
    second = http.get(f"{EVENTS}.csv", params=params())
    other = http.get(f"{EVENTS}.csv", params=params(day=2))
    third = http.get(f"{EVENTS}.csv", params=params())
    again = http.get(f"{EVENTS}.csv", params=params())
    assert (first.status_code, first.text) == (202, "Wait for result")
    assert second.status_code == 202 and "Progress is 50%" in second.text
    assert other.status_code == 202 and other.text == "Wait for result"
    assert third.status_code == 200 and third.text.startswith("event_name,event_timestamp\n")
    assert again.status_code == 200 and again.content == third.content  # kept once prepared
    assert sandbox.export_calls == 5
    assert sandbox.pending_jobs("1111") == 1
    rebuilt = http.get(f"{EVENTS}.csv", params=params(), headers={"Cache-Control": "no-cache"})
    assert rebuilt.status_code == 202


def test_429_when_a_fourth_request_would_be_queued(sandbox, http):
    for day in (1, 2, 3):
        assert http.get(f"{EVENTS}.csv", params=params(day=day)).status_code == 202
    refused = http.get(f"{EVENTS}.csv", params=params(day=4))
    assert refused.status_code == 429
    assert refused.text.startswith("There are already 3 enqueued queries for given application_id")
    assert http.get(f"{EVENTS}.csv", params=params(day=1)).status_code == 202  # known: polls on
    assert http.get(f"{EVENTS}.csv", params=params(day=1)).status_code == 200
    assert http.get(f"{EVENTS}.csv", params=params(day=4)).status_code == 202  # a slot is free


def test_try_to_use_more_parts(http):
    with (
        AppMetricaSandbox(
            TOKEN, faults=AppMetricaFaults(ready_after=0, max_rows_per_part=200)
        ) as sandbox,
        httpx.Client(base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"}) as client,
    ):
        whole = client.get(f"{EVENTS}.json", params=params())
        assert whole.status_code == 400
        assert "Try to use more parts." in whole.text
        assert sandbox.pending_jobs("1111") == 0
        bodies = [
            client.get(f"{EVENTS}.json", params=params(parts_count="3", part_number=str(n))).json()[
                "data"
            ]
            for n in range(3)
        ]
        assert [len(body) for body in bodies] == [167, 167, 166]
        stamps = sorted(row["event_timestamp"] for body in bodies for row in body)
        truth = sorted(
            row["event_timestamp"]
            for row in sandbox.rows(
                "events", "1111", datetime(2024, 3, 1), datetime(2024, 3, 1, 23, 59, 59)
            )
        )
        assert stamps == truth
        bad = client.get(f"{EVENTS}.json", params=params(parts_count="2", part_number="2"))
        assert bad.status_code == 400


def test_gzip_when_accepted(sandbox, http):
    request = ExportRequest(
        "events",
        "1111",
        datetime(2024, 3, 1),
        datetime(2024, 3, 1, 23, 59, 59),
        ("event_name", "event_timestamp"),
    )
    for _ in range(2):
        http.get(f"{EVENTS}.csv", params=params())
    with http.stream(
        "GET", f"{EVENTS}.csv", params=params(), headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw) == sandbox.body_bytes(request)
    plain = http.get(f"{EVENTS}.csv", params=params(), headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == sandbox.body_bytes(request)


def test_json_body_is_all_strings_with_optional_bom(http):
    fields = ",".join(DEFAULT_FIELDS["events"])
    for _ in range(3):
        response = http.get(f"{EVENTS}.json", params=params(fields=fields, use_utf8_bom="true"))
    assert response.status_code == 200
    assert response.content.startswith(b'\xef\xbb\xbf{"data":[')
    rows = json.loads(response.content.decode("utf-8-sig"))["data"]
    assert len(rows) == 500
    assert all(isinstance(value, str) for row in rows for value in row.values())
    assert list(rows[0]) == list(DEFAULT_FIELDS["events"])
    objects = [json.loads(row["event_json"]) for row in rows if row["event_json"]]
    assert any(isinstance(value, dict) and value for value in objects)


def test_generated_data_has_the_awkward_values(sandbox):
    rows = sandbox.rows("events", "1111", datetime(2024, 3, 1), datetime(2024, 3, 2, 23, 59, 59))
    assert (
        len(rows)
        == sandbox.count_rows(
            "events", "1111", datetime(2024, 3, 1), datetime(2024, 3, 2, 23, 59, 59)
        )
        == 1000
    )
    cities = {row["city"] for row in rows}
    assert {"Москва", "Санкт-Петербург"} <= cities
    android = [row for row in rows if row["os_name"] == "android"]
    assert android and all(row["ios_ifa"] == "" for row in android)
    assert any(row["device_ipv6"].startswith("2a02:") for row in rows)
    assert any(row["device_ipv6"].startswith("::ffff:") for row in rows)
    assert any(int(row["appmetrica_device_id"]) >= 2**63 for row in rows)
    assert any('\\"quoted\\"' in row["event_json"] for row in rows)  # escaped inside the string
    assert all(row["event_datetime"].startswith("2024-03-0") for row in rows)
    identities = {
        (row["appmetrica_device_id"], row["event_timestamp"], row["event_name"]) for row in rows
    }
    assert len(identities) == 1000


def test_data_is_deterministic_per_seed_and_windows_add_up():
    day1 = (datetime(2024, 3, 1), datetime(2024, 3, 1, 23, 59, 59))
    day2 = (datetime(2024, 3, 2), datetime(2024, 3, 2, 23, 59, 59))
    a, b = AppMetricaSandbox(seed=1), AppMetricaSandbox(seed=1)
    c = AppMetricaSandbox(seed=2)
    assert a.rows("events", "1111", *day1) == b.rows("events", "1111", *day1)
    assert a.rows("events", "1111", *day1) != c.rows("events", "1111", *day1)
    both = a.count_rows("events", "1111", day1[0], day2[1])
    assert both == a.count_rows("events", "1111", *day1) + a.count_rows("events", "1111", *day2)
    hour = a.count_rows(
        "events", "1111", datetime(2024, 3, 1, 10), datetime(2024, 3, 1, 10, 59, 59)
    )
    assert 15 <= hour <= 25
    received = AppMetricaSandbox(seed=7).rows("events", "1111", *day2, date_dimension="receive")
    assert all(row["event_receive_datetime"].startswith("2024-03-02") for row in received)
    assert any(row["event_datetime"].startswith("2024-03-01") for row in received)


def test_other_resources_cast_cleanly():
    sandbox = AppMetricaSandbox()
    window = (datetime(2024, 3, 1), datetime(2024, 3, 3, 23, 59, 59))
    installs = [
        cast_record("installations", row) for row in sandbox.rows("installations", "1111", *window)
    ]
    sessions = [
        cast_record("sessions_starts", row)
        for row in sandbox.rows("sessions_starts", "1111", *window)
    ]
    assert len(installs) == 75 and len(sessions) == 300
    assert any(row["click_timestamp"] is None for row in installs)  # organic installs
    assert any(row["tracking_id"] is not None for row in installs)
    assert {row["is_reinstallation"] for row in installs} <= {True, False}
    assert len({row["session_id"] for row in sessions}) == 300


def test_status_endpoint(sandbox, http):
    assert http.get("/management/v1/logsapi/status").json() == {
        "logs_api_availability_status": "enabled"
    }
    sandbox.faults.status_enabled = False
    assert http.get("/management/v1/logsapi/status").json()["logs_api_availability_status"] == (
        "disabled"
    )


def test_bad_parameters_are_400(http):
    assert http.get(f"{EVENTS}.csv", params=params(fields="event_name,colour")).status_code == 400
    missing = params()
    del missing["date_until"]
    answer = http.get(f"{EVENTS}.csv", params=missing)
    assert (answer.status_code, answer.text) == (400, "Parameter date_until is required")
    assert http.get("/logs/v1/export/crashes.csv", params=params()).status_code == 400
    assert http.get(f"{EVENTS}.xml", params=params()).status_code == 400


def test_server_errors_first():
    with AppMetricaSandbox(TOKEN, faults=AppMetricaFaults(server_error_first=2)) as sandbox:
        with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"}) as c:
            codes = [c.get(f"{EVENTS}.csv", params=params()).status_code for _ in range(4)]
    assert codes == [500, 500, 202, 202]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_write_events_file_is_what_the_sandbox_serves(tmp_path, fmt):
    path = tmp_path / f"events.{fmt}"
    write_events_file(path, fmt, 600, events_per_day=300, use_utf8_bom=True)
    sandbox = AppMetricaSandbox(events_per_day=300)
    request = ExportRequest(
        "events",
        "1111",
        datetime(2024, 3, 1),
        datetime(2024, 3, 2, 23, 59, 59),
        DEFAULT_FIELDS["events"],
        fmt=fmt,
        use_utf8_bom=True,
    )
    assert path.read_bytes() == sandbox.body_bytes(request)
    assert sum(1 for _ in iter_records(path, fmt)) == 600


def test_main_writes_a_file(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--write-events", str(path), "--rows", "1234", "--fmt", "json"]) == 0
    assert sum(1 for _ in iter_records(path, "json")) == 1234
    assert "wrote 1234 events rows" in capsys.readouterr().out
