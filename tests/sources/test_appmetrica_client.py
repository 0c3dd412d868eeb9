"""The Logs API client against the real HTTP sandbox: 202 polling, 429, parts, auth, retries."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import httpx
import pytest

from devtools.sandbox.appmetrica import AppMetricaFaults, AppMetricaSandbox
from dwh_helper.sources.appmetrica import (
    DEFAULT_FIELDS,
    AppMetricaAuthError,
    AppMetricaBadRequest,
    AppMetricaClient,
    AppMetricaError,
    AppMetricaNotReady,
    AppMetricaUnavailable,
    ExportedPart,
    ExportRequest,
    Preparing,
)
from tests.support.appmetrica_oracle import cast_record, iter_records

pytestmark = pytest.mark.unit

TOKEN = "test-token"
DAY = (datetime(2024, 3, 1), datetime(2024, 3, 1, 23, 59, 59))


class FakeClock:
    """monotonic() that only sleep() advances; records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_sandbox(**faults) -> AppMetricaSandbox:
    return AppMetricaSandbox(TOKEN, ("1111", "2222"), faults=AppMetricaFaults(**faults))


def make_client(sandbox: AppMetricaSandbox, clock: FakeClock, **options) -> AppMetricaClient:
    settings = {"poll_interval": 10.0, "poll_timeout": 600.0, "max_attempts": 4} | options
    return AppMetricaClient(
        options.pop("token", TOKEN) if "token" in options else TOKEN,
        base_url=sandbox.url,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **{key: value for key, value in settings.items() if key != "token"},
    )


def export_requests(sandbox: AppMetricaSandbox) -> list:
    return [request for request in sandbox.requests if request.path.startswith("/logs/")]


def test_polls_the_identical_request_until_ready(tmp_path, clock):
    with make_sandbox(ready_after=3) as sandbox, make_client(sandbox, clock) as client:
        parts = client.export("events", "1111", *DAY, dest_dir=tmp_path)
        requests = export_requests(sandbox)

        assert [request.status for request in requests] == [202, 202, 202, 200]
        assert clock.sleeps == [10.0, 10.0, 10.0]
        assert len({tuple(sorted(request.params.items())) for request in requests}) == 1
        first = requests[0]
        assert first.headers["authorization"] == f"OAuth {TOKEN}"
        assert "gzip" in first.headers["accept-encoding"]
        assert TOKEN not in str(first.params)
        assert first.params["date_since"] == "2024-03-01 00:00:00"
        assert first.params["fields"] == ",".join(DEFAULT_FIELDS["events"])
        assert "parts_count" not in first.params

        assert len(parts) == 1
        part = parts[0]
        request = ExportRequest("events", "1111", *DAY, DEFAULT_FIELDS["events"])
        assert part.path.read_bytes() == sandbox.body_bytes(request)
        assert part.size == part.path.stat().st_size
        assert (part.part_number, part.parts_count) == (0, 1)
        assert list(tmp_path.iterdir()) == [part.path]  # no .partial left behind


def test_deadline_reached_is_a_retryable_not_ready(tmp_path, clock):
    with make_sandbox(ready_after=100) as sandbox:
        client = make_client(sandbox, clock, poll_interval=10.0, poll_timeout=35.0)
        with pytest.raises(AppMetricaNotReady) as caught:
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert caught.value.retryable is True
        assert "still being prepared" in str(caught.value)
        assert "poll_timeout is 35s" in str(caught.value)
        assert "Progress is" in str(caught.value)
        assert [request.status for request in export_requests(sandbox)] == [202] * 4
        assert clock.sleeps == [10.0, 10.0, 10.0]
        assert list(tmp_path.iterdir()) == []
        client.close()


def test_rate_limited_waits_and_retries(tmp_path, clock):
    with make_sandbox(ready_after=1) as sandbox:
        raw = httpx.Client(base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"})
        queued = []
        for day in (2, 3, 4):  # three other windows of the same application wait in the queue
            params = {
                "application_id": "1111",
                "date_since": f"2024-03-0{day} 00:00:00",
                "date_until": f"2024-03-0{day} 23:59:59",
                "fields": "event_name",
            }
            assert raw.get("/logs/v1/export/events.csv", params=params).status_code == 202
            queued.append(params)
        assert sandbox.pending_jobs("1111") == 3

        def finish_one(_seconds: float) -> None:
            if queued:  # while we wait, one of the queued exports completes
                assert raw.get("/logs/v1/export/events.csv", params=queued.pop()).status_code == 200

        clock.on_sleep = finish_one
        client = make_client(sandbox, clock, rate_limit_wait=60.0)
        parts = client.export("events", "1111", *DAY, fields=["event_name"], dest_dir=tmp_path)

        statuses = [
            r.status
            for r in export_requests(sandbox)
            if r.params["fields"] == "event_name"
            and r.params["date_since"].startswith("2024-03-01")
        ]
        assert statuses == [429, 202, 200]
        assert clock.sleeps == [60.0, 10.0]
        rows = [record for _, record in iter_records(parts[0].path, "csv")]
        assert len(rows) == sandbox.count_rows("events", "1111", *DAY)
        raw.close()
        client.close()


def test_rate_limited_until_the_deadline_is_unavailable(tmp_path, clock):
    with make_sandbox(ready_after=50) as sandbox:
        raw = httpx.Client(base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"})
        for day in (2, 3, 4):
            raw.get(
                "/logs/v1/export/events.csv",
                params={
                    "application_id": "1111",
                    "date_since": f"2024-03-0{day} 00:00:00",
                    "date_until": f"2024-03-0{day} 23:59:59",
                    "fields": "event_name",
                },
            )
        client = make_client(sandbox, clock, rate_limit_wait=60.0, poll_timeout=150.0)
        with pytest.raises(AppMetricaUnavailable, match="kept answering 429") as caught:
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert caught.value.retryable is True
        assert clock.sleeps == [60.0, 60.0]
        raw.close()


def test_too_large_doubles_parts_and_fetches_every_part(tmp_path, clock):
    with make_sandbox(ready_after=1, max_rows_per_part=150) as sandbox:
        client = make_client(sandbox, clock)
        parts = client.export("events", "1111", *DAY, fmt="json", dest_dir=tmp_path)

        total = sandbox.count_rows("events", "1111", *DAY)
        assert total == 500
        assert [(p.part_number, p.parts_count) for p in parts] == [(0, 4), (1, 4), (2, 4), (3, 4)]
        asked = [r.params.get("parts_count", "1") for r in export_requests(sandbox)]
        assert asked[0] == "1" and "2" in asked and asked[-1] == "4"
        request = ExportRequest("events", "1111", *DAY, DEFAULT_FIELDS["events"], fmt="json")
        for part in parts:
            assert part.path.read_bytes() == sandbox.body_bytes(request, 4, part.part_number)
        loaded = [record for part in parts for _, record in iter_records(part.path, "json")]
        assert len(loaded) == total
        key = ("appmetrica_device_id", "event_timestamp", "event_name")
        truth = sandbox.rows("events", "1111", *DAY)
        assert sorted(tuple(r[k] for k in key) for r in loaded) == sorted(
            tuple(r[k] for k in key) for r in truth
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.path.name for p in parts)
        client.close()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_bom_and_both_formats_give_the_sandbox_rows(tmp_path, clock, fmt):
    with make_sandbox(ready_after=0) as sandbox, make_client(sandbox, clock) as client:
        (part,) = client.export(
            "events", "1111", *DAY, fmt=fmt, use_utf8_bom=True, dest_dir=tmp_path
        )
        assert part.path.read_bytes()[:3] == b"\xef\xbb\xbf"
        assert export_requests(sandbox)[0].params["use_utf8_bom"] == "true"
        records = [record for _, record in iter_records(part.path, fmt)]
        assert records == sandbox.rows("events", "1111", *DAY)
        typed = [cast_record("events", record) for record in records]
        with_json = [
            row for row in typed if isinstance(row["event_json"], dict) and row["event_json"]
        ]
        assert with_json, "the sandbox sends event_json objects"
        assert any(row["city"] == "Москва" for row in typed)


def test_installations_and_sessions_starts(tmp_path, clock):
    with make_sandbox(ready_after=1) as sandbox, make_client(sandbox, clock) as client:
        for resource in ("installations", "sessions_starts"):
            (part,) = client.export(resource, "2222", *DAY, dest_dir=tmp_path / resource)
            records = [record for _, record in iter_records(part.path, "csv")]
            assert records == sandbox.rows(resource, "2222", *DAY)
            assert len(records) == {"installations": 25, "sessions_starts": 100}[resource]
            assert all(
                cast_record(resource, record)["application_id"] == 2222 for record in records
            )


def test_wrong_token_is_fatal_and_names_the_application(tmp_path, clock):
    with make_sandbox() as sandbox:
        client = make_client(sandbox, clock, token="wrong")
        with pytest.raises(AppMetricaAuthError) as caught:
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert caught.value.retryable is False
        assert "application 1111" in str(caught.value)
        assert "403" in str(caught.value)
        assert "wrong" not in str(caught.value)  # never the token
        assert len(export_requests(sandbox)) == 1  # no retries
        assert clock.sleeps == []


def test_application_without_access_is_fatal(tmp_path, clock):
    with make_sandbox() as sandbox, make_client(sandbox, clock) as client:
        with pytest.raises(AppMetricaAuthError, match="application 3333 .*has no access"):
            client.export("events", "3333", *DAY, dest_dir=tmp_path)


def test_missing_token_is_refused_up_front():
    with pytest.raises(AppMetricaAuthError, match="APPMETRICA_TOKEN"):
        AppMetricaClient("")


def test_bad_request_quotes_appmetrica(tmp_path, clock):
    with make_sandbox() as sandbox, make_client(sandbox, clock) as client:
        with pytest.raises(AppMetricaBadRequest) as caught:
            client.export(
                "events", "1111", *DAY, fields=["event_name", "colour"], dest_dir=tmp_path
            )
        assert caught.value.retryable is False
        assert "'Unknown fields for events: colour'" in str(caught.value)
        assert len(export_requests(sandbox)) == 1


def test_server_errors_are_retried_with_backoff(tmp_path, clock):
    with make_sandbox(ready_after=0, server_error_first=2) as sandbox:
        client = make_client(sandbox, clock, max_attempts=4)
        (part,) = client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert [r.status for r in export_requests(sandbox)] == [500, 500, 200]
        assert len(clock.sleeps) == 2
        assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0  # jittered doubling
        assert part.size > 0
        client.close()


def test_server_errors_exhaust_attempts(tmp_path, clock):
    with make_sandbox(server_error_first=10) as sandbox:
        client = make_client(sandbox, clock, max_attempts=3)
        with pytest.raises(AppMetricaUnavailable, match="gave up after 3 attempts") as caught:
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert caught.value.retryable is True
        assert len(export_requests(sandbox)) == 3
        client.close()


def test_network_errors_are_retried_then_unavailable(tmp_path, clock):
    with make_sandbox() as sandbox:
        url = sandbox.url
    client = AppMetricaClient(
        TOKEN, base_url=url, sleep=clock.sleep, monotonic=clock.monotonic, max_attempts=3
    )
    with pytest.raises(AppMetricaUnavailable, match="ConnectError"):
        client.export("events", "1111", *DAY, dest_dir=tmp_path)
    assert len(clock.sleeps) == 2
    client.close()


def test_status(clock):
    with make_sandbox() as sandbox, make_client(sandbox, clock) as client:
        assert client.status() is True
        sandbox.faults.status_enabled = False
        assert client.status() is False
    with make_sandbox() as sandbox, make_client(sandbox, clock, token="nope") as client:
        with pytest.raises(AppMetricaAuthError, match="check the OAuth token"):
            client.status()


def test_poll_part_answers_preparing_while_preparing(tmp_path, clock):
    request = ExportRequest("events", "1111", *DAY, ("event_name", "event_timestamp"), fmt="json")
    with make_sandbox(ready_after=2) as sandbox, make_client(sandbox, clock) as client:
        assert client.poll_part(request, tmp_path) == Preparing("Wait for result")
        assert client.poll_part(request, tmp_path).progress == "50%"
        part = client.poll_part(request, tmp_path)
        assert isinstance(part, ExportedPart)
        assert part.path.read_bytes() == sandbox.body_bytes(request)
        assert clock.sleeps == []


def test_identical_requests_from_threads_are_not_fired_in_parallel(tmp_path):
    with make_sandbox(ready_after=1) as sandbox:
        client = AppMetricaClient(TOKEN, base_url=sandbox.url, poll_interval=0.05)
        results: list = []

        def run(name: str) -> None:
            results.append(client.export("events", "1111", *DAY, dest_dir=tmp_path / name))

        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(results) == 2
        # serialized: 202 then 200 for the first, 200 straight away for the second
        assert [r.status for r in export_requests(sandbox)] == [202, 200, 200]
        client.close()


def test_export_request_validation():
    with pytest.raises(ValueError, match="application_id 'abc' must be a numeric id"):
        ExportRequest("events", "abc", *DAY, ("event_name",))
    with pytest.raises(ValueError, match="date_dimension 'server'"):
        ExportRequest("events", "1111", *DAY, ("event_name",), date_dimension="server")
    with pytest.raises(ValueError, match="is before since"):
        ExportRequest("events", "1111", DAY[1], DAY[0], ("event_name",))
    assert issubclass(AppMetricaNotReady, AppMetricaError)
    started = time.monotonic()
    assert ExportRequest("events", "1111", *DAY, ("a",)).params(4, 3)["part_number"] == "3"
    assert time.monotonic() - started < 1


def test_from_settings(tmp_path, clock):
    from pydantic import SecretStr

    from dwh_helper.config import AppMetricaSettings, SettingsError

    with make_sandbox(ready_after=0) as sandbox:
        settings = AppMetricaSettings(
            base_url=sandbox.url, token=SecretStr(TOKEN), poll_interval_seconds=2.5
        )
        with AppMetricaClient.from_settings(settings, sleep=clock.sleep) as client:
            assert client.poll_interval == 2.5
            assert client.status() is True
    with pytest.raises(SettingsError, match="APPMETRICA_TOKEN"):
        AppMetricaClient.from_settings(AppMetricaSettings(token=None))
