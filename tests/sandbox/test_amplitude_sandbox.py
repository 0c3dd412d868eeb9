"""The Amplitude sandbox: generated data (deterministic, realistic) and the HTTP wire protocol."""

from __future__ import annotations

import collections
import io
import ipaddress
import re
import subprocess
import sys
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devtools.sandbox import __main__ as sandbox_cli
from devtools.sandbox.amplitude import (
    NOT_FOUND_MESSAGE,
    AmplitudeFaults,
    AmplitudeSandbox,
    SandboxProject,
)
from devtools.sandbox.amplitude_events import (
    day_event_counts,
    entry_name,
    generate_hour,
    hour_event_count,
    iter_hour,
    iter_window_hours,
    write_day_archive,
)
from dwh_helper.sources.amplitude import ExportWindow, archive_entries
from tests.support.amplitude_events import iter_events

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2024, 3, 2)
WINDOW = ExportWindow.for_day(DAY)
TWO_DAYS = ExportWindow(WINDOW.start, WINDOW.end + timedelta(days=1))
WEB_ID = 374182

#: Every key of an exported event (reference/amplitude-export-api.md).
REFERENCE_KEYS = set(
    """$insert_id $insert_key $schema adid amplitude_attribution_ids amplitude_event_type
    amplitude_id app city client_event_time client_upload_time country data data_type
    device_brand device_carrier device_family device_id device_manufacturer device_model
    device_type dma event_id event_properties event_time event_type global_user_properties
    group_properties groups idfa ip_address is_attribution_event language library
    location_lat location_lng os_name os_version partner_id paying plan platform
    processed_time region sample_rate server_received_time server_upload_time session_id
    source_id start_version user_creation_time user_id user_properties uuid version_name""".split()
)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def two_days() -> list[dict]:
    """Two days of the web project's events (about 1,900)."""
    return [
        event
        for hour in iter_window_hours(TWO_DAYS)
        for event in iter_hour(WEB_ID, hour, 42, hour_event_count(WEB_ID, hour, 42, 40))
    ]


# --------------------------------------------------------------------------- the generator


def test_generation_is_deterministic_and_seeded():
    hour = datetime(2024, 3, 2, 12, tzinfo=UTC)
    first = generate_hour(WEB_ID, hour, 42, 30)
    assert first == generate_hour(WEB_ID, hour, 42, 30)
    assert len(first) == 30
    assert first != generate_hour(WEB_ID, hour, 43, 30)
    assert first != generate_hour(281811, hour, 42, 30)
    assert generate_hour(WEB_ID, hour, 42, 0) == []


def test_hour_counts_follow_the_day_and_some_hours_are_empty():
    week = ExportWindow(WINDOW.start, WINDOW.start + timedelta(days=7, hours=-1))
    counts = [hour_event_count(WEB_ID, hour, 42, 40) for hour in iter_window_hours(week)]
    assert 0 in counts
    assert len(set(counts)) > 20
    assert 30 < sum(counts) / len(counts) < 50
    assert max(counts) > 50  # busy hours need several parts of 50
    assert sum(day_event_counts(WEB_ID, DAY, 42, 0, total_events=100_003)) == 100_003
    assert day_event_counts(WEB_ID, DAY, 42, 40) == counts[:24]


def test_every_reference_field_and_well_formed_values(two_days):
    assert len(two_days) > 1000
    for event in two_days:
        assert set(event) == REFERENCE_KEYS
        assert UUID.match(event["uuid"]) and UUID.match(event["$insert_id"])
        for key in ("event_time", "client_event_time", "server_upload_time", "processed_time"):
            assert TIMESTAMP.match(event[key]), (key, event[key])
        if event["ip_address"] is not None:
            ipaddress.ip_address(event["ip_address"])
        for key in ("event_properties", "user_properties", "data", "plan", "groups"):
            assert isinstance(event[key], dict)
    assert len({event["uuid"] for event in two_days}) == len(two_days)
    assert len({event["$insert_id"] for event in two_days}) == len(two_days)


def test_events_are_ordered_and_uploaded_inside_their_hour(two_days):
    uploads = [event["server_upload_time"][:19] for event in two_days]  # some have no fraction
    assert uploads == sorted(uploads)
    hour = datetime(2024, 3, 2, 7, tzinfo=UTC)
    for event in generate_hour(WEB_ID, hour, 42, 200):
        assert event["server_upload_time"].startswith("2024-03-02 07:")
        assert event["event_time"] <= event["server_upload_time"]


def test_the_variety_the_mapping_has_to_handle(two_days):
    def values(key):
        return [event[key] for event in two_days]

    user_ids = set(values("user_id"))
    assert {None, "", "N/A", "-1"} <= user_ids
    assert any(isinstance(value, str) and value.isdigit() for value in user_ids)
    assert None in values("device_id")
    assert -1 in values("session_id")
    assert any(value > 1_600_000_000_000 for value in values("session_id"))
    cities = set(values("city"))
    assert any(re.search("[а-яА-Я]", city or "") for city in cities)
    ips = [ipaddress.ip_address(ip) for ip in values("ip_address") if ip]
    assert {4, 6} <= {ip.version for ip in ips}
    assert None in values("location_lat") and any(
        isinstance(v, float) for v in values("location_lat")
    )
    assert {type(value) for value in values("amplitude_attribution_ids")} == {type(None), list, str}
    assert {None, True, False} <= set(values("paying"))
    assert {None, True, False} <= set(values("is_attribution_event"))
    assert any("." not in event["event_time"] for event in two_days)
    assert any(
        isinstance(value, dict) for props in values("event_properties") for value in props.values()
    )
    assert any(re.search("[а-яА-Я]", str(props)) for props in values("event_properties"))


def test_user_properties_carry_the_mapping_keys_and_bad_values(two_days):
    props = [event["user_properties"] for event in two_days]
    keys = collections.Counter(key for item in props for key in item)
    for key in (
        "EHR_ID",
        "Gender",
        "gender",
        "Age",
        "age",
        "Notifications state",
        "push_permission",
        "Authorized",
        "authorization_status",
        "app_city",
        "cohort_day",
        "cohort_week",
        "cohort_month",
        "registered_via_app",
        "source",
        "telemed_files_sent",
        "appointments_booked",
        "location_permission",
        "Ehr Count",
        "google_pay_available",
    ):
        assert keys[key] > 0, key
    ehr_ids = {item.get("EHR_ID") for item in props}
    assert {None, "N/A", "no ehr"} <= ehr_ids
    ages = {item["Age"] for item in props if "Age" in item}
    assert any(re.fullmatch(r"\d+ (год|года|лет)", str(age)) for age in ages)
    assert "unknown age" in ages or any(item.get("push_permission") == "maybe" for item in props)
    rejected = sum(
        1
        for item in props
        if item.get("Age") == "unknown age"
        or item.get("push_permission") == "maybe"
        or item.get("authorization_status") == "sometimes"
        or item.get("cohort_day") == "first"
        or item.get("registered_via_app") == "by fax"
        or item.get("telemed_files_sent") == "many"
    )
    assert 0 < rejected < len(props) * 0.03
    assert {item.get("app_city") for item in props} >= {"SPB", "Moscow"}


def test_devices_repeat_with_the_same_attributes(two_days):
    by_device: dict[str, set] = collections.defaultdict(set)
    for event in two_days:
        if event["device_id"] is not None:
            by_device[event["device_id"]].add(
                tuple(
                    event[key]
                    for key in (
                        "device_brand",
                        "device_carrier",
                        "device_family",
                        "device_manufacturer",
                        "device_model",
                        "device_type",
                        "platform",
                    )
                )
            )
    assert len(by_device) < len(two_days) * 0.9  # devices repeat
    assert all(len(attributes) == 1 for attributes in by_device.values())


def test_write_day_archive_streams_a_readable_day(tmp_path):
    path = tmp_path / "day.zip"
    written = write_day_archive(path, WEB_ID, DAY, 7, 0, total_events=3000, events_per_part=100)
    assert written == 3000
    events = list(iter_events(path))
    assert len(events) == 3000
    assert len({raw.event["uuid"] for raw in events}) == 3000
    entries = archive_entries(path)
    assert entry_name(WEB_ID, WINDOW.start + timedelta(hours=10), 0) in entries
    assert any(name.endswith("#1.json.gz") for name in entries)
    again = tmp_path / "again.zip"
    write_day_archive(again, WEB_ID, DAY, 7, 0, total_events=3000, events_per_part=100)
    assert again.read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------- the server


@pytest.fixture
def sandbox():
    with AmplitudeSandbox() as server:
        yield server


def get(sandbox: AmplitudeSandbox, window: ExportWindow | None = None, *, auth=None, path=None):
    params = window.params() if window else None
    return httpx.get(sandbox.url + (path or "/api/2/export"), params=params, auth=auth)


def web_auth(sandbox: AmplitudeSandbox) -> tuple[str, str]:
    project = sandbox.project("web")
    return project.api_key, project.secret_key


def test_a_200_serves_the_deterministic_archive_of_the_truth(sandbox):
    response = get(sandbox, WINDOW, auth=web_auth(sandbox))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.content == sandbox.archive_bytes("web", WINDOW)
    assert get(sandbox, WINDOW, auth=web_auth(sandbox)).content == response.content
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert all(
            re.fullmatch(rf"{WEB_ID}/{WEB_ID}_2024-03-02_\d{{1,2}}#\d+\.json\.gz", n) for n in names
        )
        for name in names:
            hour = int(name.split("_")[-1].split("#")[0])
            assert archive.getinfo(name).date_time == (2024, 3, 2, hour, 0, 0)
    assert any(name.endswith("#1.json.gz") for name in names)  # a busy hour has two parts
    count = sandbox.count_events("web", WINDOW)
    assert count == len(list(sandbox.events("web", WINDOW))) > 500
    assert sandbox.export_calls == 2
    assert [(r.status, r.project) for r in sandbox.requests] == [(200, "web"), (200, "web")]


def test_projects_get_their_own_data(sandbox):
    web = get(sandbox, WINDOW, auth=web_auth(sandbox)).content
    mobile_project = sandbox.project("mobile")
    mobile = get(sandbox, WINDOW, auth=(mobile_project.api_key, mobile_project.secret_key))
    assert mobile.status_code == 200
    assert mobile.content != web
    assert mobile.content == sandbox.archive_bytes("mobile", WINDOW)
    with pytest.raises(KeyError, match="no project 'ios'"):
        sandbox.project("ios")


def test_credentials_are_checked_per_project(sandbox):
    missing = get(sandbox, WINDOW)
    assert missing.status_code == 401
    api_key, _ = web_auth(sandbox)
    wrong = get(sandbox, WINDOW, auth=(api_key, "sandbox-mobile-secret-key"))
    assert wrong.status_code == 403
    assert "Invalid API Key" in wrong.text
    assert [r.status for r in sandbox.requests] == [401, 403]


def test_an_empty_day_answers_404_and_bad_requests_400(sandbox):
    sandbox.faults.empty_days.add(DAY)
    empty = get(sandbox, WINDOW, auth=web_auth(sandbox))
    assert empty.status_code == 404
    assert empty.text == NOT_FOUND_MESSAGE
    assert sandbox.count_events("web", WINDOW) == 0
    assert sandbox.archive_bytes("web", WINDOW) is None
    assert sandbox.count_events("web", TWO_DAYS) > 0  # only that day is empty
    bad = httpx.get(
        sandbox.url + "/api/2/export",
        params={"start": "2024-03-02", "end": "x"},
        auth=web_auth(sandbox),
    )
    assert bad.status_code == 400 and "YYYYMMDDTHH" in bad.text
    assert get(sandbox, path="/api/2/events").status_code == 404


def test_faults_fire_in_order_and_are_consumed():
    faults = AmplitudeFaults(
        rate_limit_first=1,
        retry_after=9,
        server_error_first=2,
        non_zip_first=1,
        truncate_first=1,
        max_window_hours=12,
    )
    with AmplitudeSandbox(faults=faults) as sandbox:
        auth = web_auth(sandbox)
        half = ExportWindow(WINDOW.start, WINDOW.start + timedelta(hours=11))
        answers = [get(sandbox, half, auth=auth) for _ in range(5)]
        assert [a.status_code for a in answers] == [429, 500, 503, 200, 200]
        assert answers[0].headers["retry-after"] == "9"
        assert answers[3].text.startswith("<!DOCTYPE html>")
        full = sandbox.archive_bytes("web", half)
        assert answers[4].content == full[: len(full) // 2]
        assert get(sandbox, half, auth=auth).content == full
        too_large = get(sandbox, WINDOW, auth=auth)
        assert too_large.status_code == 400 and "4GB" in too_large.text
        sandbox.faults.too_large_hours.add(WINDOW.start + timedelta(hours=3))
        assert get(sandbox, half, auth=auth).status_code == 400
        assert [r.fault for r in sandbox.requests] == [
            "rate_limit",
            "server_error",
            "server_error",
            "non_zip",
            "truncate",
            None,
            "too_large",
            "too_large",
        ]
    assert (faults.rate_limit_first, faults.server_error_first, faults.truncate_first) == (0, 0, 0)


def test_custom_projects_and_restart_free_stop():
    project = SandboxProject("web", "key-1", "secret-1", 1001)
    sandbox = AmplitudeSandbox([project], seed=5, events_per_hour=5).start()
    try:
        answer = get(sandbox, WINDOW, auth=("key-1", "secret-1"))
        assert answer.status_code == 200
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            assert all(name.startswith("1001/1001_") for name in archive.namelist())
    finally:
        sandbox.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(sandbox.url + "/api/2/export", timeout=2)


# --------------------------------------------------------------------------- the command line


def test_cli_serves_until_terminated():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.sandbox",
            "amplitude",
            "--port",
            "0",
            "--seed",
            "7",
            "--events-per-hour",
            "5",
            "--empty-day",
            "2024-03-03",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"listening on (http://\S+)", first)
        assert match, first + process.stderr.read()
        url = match.group(1)
        keys = [process.stdout.readline() for _ in range(3)]
        assert "api_key=sandbox-web-api-key" in "".join(keys)
        auth = ("sandbox-web-api-key", "sandbox-web-secret-key")
        answer = httpx.get(url + "/api/2/export", params=WINDOW.params(), auth=auth)
        assert answer.status_code == 200
        local = AmplitudeSandbox(seed=7, events_per_hour=5)
        assert answer.content == local.archive_bytes("web", WINDOW)
        empty = ExportWindow.for_day(date(2024, 3, 3))
        assert httpx.get(url + "/api/2/export", params=empty.params(), auth=auth).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_cli_dispatch_reports_unknown_and_missing_sandboxes(capsys, monkeypatch):
    assert sandbox_cli.main(["nope"]) == 2
    assert "unknown sandbox 'nope'" in capsys.readouterr().err
    monkeypatch.setitem(sandbox_cli.SANDBOXES, "ghost", "devtools.sandbox.no_such_module")
    assert sandbox_cli.main(["ghost"]) == 2
    assert "module devtools.sandbox.no_such_module is missing" in capsys.readouterr().err
    assert sandbox_cli.main([]) == 2
    assert "amplitude" in capsys.readouterr().out
    with pytest.raises(SystemExit) as caught:
        sandbox_cli.main(["amplitude", "--project", "broken"])
    assert caught.value.code == 2
    assert "NAME:API_KEY:SECRET_KEY:PROJECT_ID" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["amplitude", "appmetrica"])
def test_each_sandbox_package_runs_as_a_module(name):
    """`python -m devtools.sandbox.<name> --help` is the same command line as the dispatcher's."""
    result = subprocess.run(
        [sys.executable, "-m", f"devtools.sandbox.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"python -m devtools.sandbox {name}" in result.stdout
    assert "--port" in result.stdout
