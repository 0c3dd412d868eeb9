"""AmplitudeClient and the archive reader against the real sandbox server (no mocks of HTTP)."""

from __future__ import annotations

import gzip
import io
import logging
import socket
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devtools.sandbox.amplitude import AmplitudeFaults, AmplitudeSandbox
from devtools.sandbox.amplitude_events import entry_name, hour_event_count, iter_window_hours
from dwh_helper.sources.amplitude import (
    EU_BASE_URL,
    US_BASE_URL,
    AmplitudeAuthError,
    AmplitudeClient,
    AmplitudeDataNotReady,
    AmplitudeError,
    AmplitudeUnavailable,
    AmplitudeWindowTooLarge,
    ArchiveError,
    ExportWindow,
    archive_entries,
    iter_lines,
)
from tests.support.amplitude_events import iter_events

pytestmark = pytest.mark.unit

DAY = date(2024, 3, 2)
WINDOW = ExportWindow.for_day(DAY)
LATER = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[AmplitudeSandbox]:
    with AmplitudeSandbox() as server:
        yield server


class Sleeps(list):
    """Records the waits the client asks for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    sandbox: AmplitudeSandbox, sleeps: Sleeps, project: str = "web", **options
) -> AmplitudeClient:
    chosen = sandbox.project(project)
    options.setdefault("base_url", sandbox.url)
    options.setdefault("now", lambda: LATER)
    return AmplitudeClient(
        chosen.api_key, chosen.secret_key, project=project, sleep=sleeps, **options
    )


def files_in(path: Path) -> list[str]:
    return sorted(item.name for item in path.iterdir())


# --------------------------------------------------------------------------- windows


def test_window_for_day_params_label_and_split():
    assert WINDOW.start == datetime(2024, 3, 2, 0, tzinfo=UTC)
    assert WINDOW.end == datetime(2024, 3, 2, 23, tzinfo=UTC)
    assert WINDOW.hours() == 24
    assert WINDOW.params() == {"start": "20240302T00", "end": "20240302T23"}
    assert WINDOW.label() == "20240302T00-20240302T23"
    assert WINDOW.ends_at() == datetime(2024, 3, 3, tzinfo=UTC)
    first, second = WINDOW.split()
    assert (first.label(), second.label()) == ("20240302T00-20240302T11", "20240302T12-20240302T23")
    odd = ExportWindow(WINDOW.start, WINDOW.start + timedelta(hours=2))
    assert [half.hours() for half in odd.split()] == [1, 2]
    assert ExportWindow.from_params("20240302T05", "20240302T05").hours() == 1


def test_window_rejects_what_the_api_cannot_express():
    with pytest.raises(ValueError, match="naive"):
        ExportWindow(datetime(2024, 3, 2), datetime(2024, 3, 2, 1))
    with pytest.raises(ValueError, match="not a whole hour"):
        ExportWindow(WINDOW.start.replace(minute=30), WINDOW.end)
    with pytest.raises(ValueError, match="before start"):
        ExportWindow(WINDOW.end, WINDOW.start)
    with pytest.raises(ValueError, match="single hour"):
        ExportWindow(WINDOW.start, WINDOW.start).split()
    with pytest.raises(ValueError, match="YYYYMMDDTHH"):
        ExportWindow.from_params("2024-03-02", "20240302T01")


def test_region_selects_the_host_and_bad_settings_are_refused():
    assert AmplitudeClient("k", "s").base_url == US_BASE_URL
    assert AmplitudeClient("k", "s", region="eu").base_url == EU_BASE_URL
    with pytest.raises(ValueError, match="'us' or 'eu'"):
        AmplitudeClient("k", "s", region="asia")
    with pytest.raises(ValueError, match="AMPLITUDE_MOBILE_CLIENT_ID"):
        AmplitudeClient("", "s", project="mobile")


# --------------------------------------------------------------------------- 200 / 404


def test_export_streams_the_archive_byte_for_byte(sandbox, sleeps, tmp_path):
    with make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
    assert result.empty_windows == []
    assert [item.window for item in result.files] == [WINDOW]
    exported = result.files[0]
    served = sandbox.archive_bytes("web", WINDOW)
    assert exported.path.read_bytes() == served
    assert exported.size == len(served) == result.total_bytes
    assert len(exported.sha256) == 64
    assert files_in(tmp_path) == ["amplitude_web_20240302T00-20240302T23.zip"]
    assert sleeps == []
    assert sandbox.export_calls == 1
    assert sandbox.requests[0].query == {"start": "20240302T00", "end": "20240302T23"}


def test_404_is_an_empty_window_not_an_error(sleeps, tmp_path):
    faults = AmplitudeFaults(empty_days={DAY})
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
        assert [request.status for request in sandbox.requests] == [404]
    assert result.files == []
    assert result.empty_windows == [WINDOW]
    assert files_in(tmp_path) == []
    assert sleeps == []


def test_a_window_over_365_days_is_requested_in_pieces(sleeps, tmp_path):
    start = datetime(2023, 1, 1, tzinfo=UTC)
    window = ExportWindow(start, start + timedelta(days=400) - timedelta(hours=1))
    with (
        AmplitudeSandbox(events_per_hour=0) as sandbox,
        make_client(sandbox, sleeps) as client,
    ):
        result = client.export(window, tmp_path)
        queries = [request.query for request in sandbox.requests]
    assert queries == [
        {"start": "20230101T00", "end": "20231231T23"},
        {"start": "20240101T00", "end": "20240204T23"},
    ]
    assert [item.hours() for item in result.empty_windows] == [365 * 24, 35 * 24]


# --------------------------------------------------------------------------- 400 / 504


def test_400_splits_the_window_in_halves_until_it_fits(sleeps, tmp_path):
    faults = AmplitudeFaults(max_window_hours=6)
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
        asked = [
            (request.query["start"][-2:], request.query["end"][-2:], request.status)
            for request in sandbox.requests
        ]
        truth = list(sandbox.events("web", WINDOW))
    assert asked == [
        ("00", "23", 400),
        ("00", "11", 400),
        ("00", "05", 200),
        ("06", "11", 200),
        ("12", "23", 400),
        ("12", "17", 200),
        ("18", "23", 200),
    ]
    assert [item.window.label() for item in result.files] == [
        "20240302T00-20240302T05",
        "20240302T06-20240302T11",
        "20240302T12-20240302T17",
        "20240302T18-20240302T23",
    ]
    loaded = [raw.event for item in result.files for raw in iter_events(item.path)]
    assert loaded == truth
    assert len({event["uuid"] for event in loaded}) == len(truth) > 0
    assert sleeps == []


def test_504_splits_like_400(sleeps, tmp_path):
    faults = AmplitudeFaults(max_window_hours=12, too_large_status=504)
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
        statuses = [request.status for request in sandbox.requests]
    assert statuses == [504, 200, 200]
    assert [item.window.hours() for item in result.files] == [12, 12]


def test_a_single_hour_over_the_limit_is_a_clear_fatal_error(sleeps, tmp_path):
    too_large = datetime(2024, 3, 2, 10, tzinfo=UTC)
    faults = AmplitudeFaults(too_large_hours={too_large})
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        with pytest.raises(AmplitudeWindowTooLarge) as caught:
            client.export(WINDOW, tmp_path)
        hours_asked = [request.query["start"] for request in sandbox.requests]
    message = str(caught.value)
    assert "2024-03-02 10:00 UTC" in message
    assert "4 GB" in message
    assert "'web'" in message
    assert "exceed" in message  # the server's own words are passed on
    assert caught.value.retryable is False
    # bisection went down to the single hour 10, after exporting hours 00..09
    assert hours_asked[-1] == "20240302T10"
    assert files_in(tmp_path) == []  # files of the earlier halves are removed again
    assert sleeps == []


# --------------------------------------------------------------------------- transient faults


def test_429_honours_retry_after(sleeps, tmp_path):
    faults = AmplitudeFaults(rate_limit_first=2, retry_after=7)
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
        assert [request.status for request in sandbox.requests] == [429, 429, 200]
        assert result.files[0].path.read_bytes() == sandbox.archive_bytes("web", WINDOW)
    assert sleeps == [7, 7]
    assert faults.rate_limit_first == 0


def test_5xx_backs_off_exponentially_with_full_jitter(sleeps, tmp_path):
    faults = AmplitudeFaults(server_error_first=4)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        make_client(sandbox, sleeps, backoff_base=0.5, backoff_max=3.0) as client,
    ):
        result = client.export(WINDOW, tmp_path)
        statuses = [request.status for request in sandbox.requests]
    assert sorted(set(statuses[:4])) == [500, 503]
    assert statuses[4] == 200
    assert len(result.files) == 1
    assert len(sleeps) == 4
    for attempt, waited in enumerate(sleeps, start=1):
        assert 0 <= waited <= min(3.0, 0.5 * 2 ** (attempt - 1))


@pytest.mark.parametrize("fault", ["truncate_first", "non_zip_first", "disconnect_first"])
def test_a_200_that_is_not_a_complete_zip_is_retried(fault, sleeps, tmp_path):
    faults = AmplitudeFaults(**{fault: 2})
    with AmplitudeSandbox(faults=faults) as sandbox, make_client(sandbox, sleeps) as client:
        result = client.export(WINDOW, tmp_path)
        served = sandbox.archive_bytes("web", WINDOW)
        fired = [request.fault for request in sandbox.requests]
    assert fired == [fault.removesuffix("_first")] * 2 + [None]
    assert len(sleeps) == 2
    assert result.files[0].path.read_bytes() == served
    assert files_in(tmp_path) == ["amplitude_web_20240302T00-20240302T23.zip"]  # no .part left


def test_retries_are_bounded_and_leave_no_partial_file(sleeps, tmp_path):
    faults = AmplitudeFaults(truncate_first=2, server_error_first=0)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        make_client(sandbox, sleeps, max_attempts=2) as client,
    ):
        with pytest.raises(AmplitudeUnavailable) as caught:
            client.export(WINDOW, tmp_path)
        assert sandbox.export_calls == 2
    assert caught.value.retryable is True
    assert "after 2 attempt(s)" in str(caught.value)
    assert "truncated" in str(caught.value)
    assert len(sleeps) == 1
    assert files_in(tmp_path) == []


def test_5xx_forever_gives_up_after_max_attempts(sleeps, tmp_path):
    faults = AmplitudeFaults(server_error_first=100)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        make_client(sandbox, sleeps, max_attempts=3) as client,
    ):
        with pytest.raises(AmplitudeUnavailable, match="HTTP 50[03]"):
            client.export(WINDOW, tmp_path)
        assert sandbox.export_calls == 3
    assert len(sleeps) == 2


def test_connection_refused_is_retried_then_reported(sleeps, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AmplitudeClient(
        "k",
        "s",
        base_url=f"http://127.0.0.1:{port}",
        sleep=sleeps,
        now=lambda: LATER,
        max_attempts=3,
        connect_timeout=1.0,
    )
    with client, pytest.raises(AmplitudeUnavailable, match="ConnectError"):
        client.export(WINDOW, tmp_path)
    assert len(sleeps) == 2


def test_a_read_timeout_is_retried(sleeps, tmp_path):
    # the stall is well past the timeout, and the timeout well past a normal answer (which
    # takes up to ~0.5 s when the 2 cores are busy with other work)
    faults = AmplitudeFaults(stall_first=1, stall_seconds=4.0)
    with (
        AmplitudeSandbox(faults=faults, events_per_hour=2) as sandbox,
        make_client(sandbox, sleeps, timeout=2.0) as client,
    ):
        result = client.export(WINDOW, tmp_path)
        assert result.files[0].path.read_bytes() == sandbox.archive_bytes("web", WINDOW)
    assert len(sleeps) == 1


# --------------------------------------------------------------------------- fatal


def test_403_names_project_and_region_and_is_not_retried(sandbox, sleeps, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    client = AmplitudeClient(
        "sandbox-mobile-api-key",
        "a-wrong-secret-value",
        project="mobile",
        region="eu",
        base_url=sandbox.url,
        sleep=sleeps,
        now=lambda: LATER,
    )
    with client, pytest.raises(AmplitudeAuthError) as caught:
        client.export(WINDOW, tmp_path)
    message = str(caught.value)
    assert "HTTP 403" in message and "Invalid API Key" in message
    assert "project 'mobile'" in message and "region 'eu'" in message
    assert "AMPLITUDE_MOBILE_CLIENT_ID/SECRET_KEY" in message
    assert "EU projects need region=eu" in message
    assert caught.value.retryable is False
    assert "a-wrong-secret-value" not in message
    assert "a-wrong-secret-value" not in caplog.text
    assert sandbox.export_calls == 1
    assert sleeps == []


def test_401_is_fatal_and_says_what_to_set(sleeps, tmp_path):
    # The client always sends Basic auth, so the real sandbox cannot answer it 401;
    # an httpx transport plays a server that ignores the header.
    transport = httpx.MockTransport(lambda request: httpx.Response(401, text="Unauthorized"))
    client = AmplitudeClient(
        "k", "s", project="web", transport=transport, sleep=sleeps, now=lambda: LATER
    )
    with client, pytest.raises(AmplitudeAuthError, match="AMPLITUDE_WEB_CLIENT_ID/SECRET_KEY"):
        client.export(WINDOW, tmp_path)
    assert sleeps == []


def test_an_unexpected_status_is_fatal(sleeps, tmp_path):
    transport = httpx.MockTransport(lambda request: httpx.Response(418, text="teapot"))
    client = AmplitudeClient("k", "s", transport=transport, sleep=sleeps, now=lambda: LATER)
    with client, pytest.raises(AmplitudeError, match="HTTP 418"):
        client.export(WINDOW, tmp_path)
    assert sleeps == []


def test_a_window_ending_less_than_two_hours_ago_is_refused(sandbox, sleeps, tmp_path):
    too_soon = WINDOW.ends_at() + timedelta(hours=1, minutes=59)
    with make_client(sandbox, sleeps, now=lambda: too_soon) as client:
        with pytest.raises(AmplitudeDataNotReady) as caught:
            client.export(WINDOW, tmp_path)
    assert "less than 2 hours" in str(caught.value)
    assert "2024-03-03 02:00 UTC" in str(caught.value)  # when it becomes exportable
    assert sandbox.export_calls == 0
    just_ready = WINDOW.ends_at() + timedelta(hours=2)
    with make_client(sandbox, sleeps, now=lambda: just_ready) as client:
        assert len(client.export(WINDOW, tmp_path).files) == 1


def test_requests_are_logged_without_the_secret(sandbox, sleeps, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with make_client(sandbox, sleeps) as client:
        client.export(WINDOW, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "dwh_helper.sources.amplitude"]
    request_lines = [line for line in lines if line.startswith("amplitude GET")]
    assert len(request_lines) == 1
    assert "status=200" in request_lines[0] and "bytes=" in request_lines[0]
    secret = sandbox.project("web").secret_key
    assert secret not in caplog.text


# --------------------------------------------------------------------------- reading archives


def test_iter_events_over_a_multi_part_archive(sleeps, tmp_path):
    with AmplitudeSandbox(events_per_part=10) as sandbox, make_client(sandbox, sleeps) as client:
        path = client.export(WINDOW, tmp_path).files[0].path
        truth = list(sandbox.events("web", WINDOW))
        project_id = sandbox.project("web").project_id
        counts = {
            hour: hour_event_count(project_id, hour, sandbox.seed, sandbox.events_per_hour)
            for hour in iter_window_hours(WINDOW)
        }
    expected_positions = [
        (entry_name(project_id, hour, index // 10), index % 10 + 1)
        for hour, count in counts.items()
        for index in range(count)
    ]
    read = list(iter_events(path))
    assert [raw.event for raw in read] == truth
    assert [(raw.entry, raw.line) for raw in read] == expected_positions
    assert len({raw.event["uuid"] for raw in read}) == len(truth)
    entries = archive_entries(path)
    assert any(name.endswith("#2.json.gz") for name in entries)  # busy hours have parts
    assert entries == list(dict.fromkeys(position[0] for position in expected_positions))


def write_zip(path: Path, entries: dict[str, bytes], *, gzip_them: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, gzip.compress(data) if gzip_them else data)
    return path


def test_entries_are_read_in_day_hour_part_order_whatever_the_zip_order(tmp_path):
    names = [
        "1/1_2024-03-02_10#0.json.gz",
        "1/1_2024-03-02_9#1.json.gz",
        "1/1_2024-03-03_0#0.json.gz",
        "1/1_2024-03-02_9#0.json.gz",
        "1/1_2024-03-02_2#10.json.gz",
        "1/1_2024-03-02_2#2.json.gz",
    ]
    path = write_zip(tmp_path / "a.zip", {name: b'{"n": "%s"}\n' % name.encode() for name in names})
    expected = [
        "1/1_2024-03-02_2#2.json.gz",
        "1/1_2024-03-02_2#10.json.gz",
        "1/1_2024-03-02_9#0.json.gz",
        "1/1_2024-03-02_9#1.json.gz",
        "1/1_2024-03-02_10#0.json.gz",
        "1/1_2024-03-03_0#0.json.gz",
    ]
    assert archive_entries(path) == expected
    assert [raw.event["n"] for raw in iter_events(path)] == expected


def test_iter_lines_skips_blank_lines_but_keeps_counting(tmp_path):
    body = b'{"a": 1}\n\n  \r\n{"a": 2}\r\n{"a": 3}'  # CRLF and no final newline
    path = write_zip(tmp_path / "a.zip", {"1/1_2024-03-02_0#0.json.gz": body})
    lines = list(iter_lines(path))
    assert [(raw.line, raw.data) for raw in lines] == [
        (1, b'{"a": 1}'),
        (4, b'{"a": 2}'),
        (5, b'{"a": 3}'),
    ]


def test_iter_lines_reads_concatenated_gzip_members_and_big_entries(tmp_path):
    first = b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"x" * 200) for i in range(20_000))
    second = b'{"i": "last"}\n'
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("1/1_2024-03-02_0#0.json.gz", gzip.compress(first) + gzip.compress(second))
    events = list(iter_events(path))
    assert len(events) == 20_001
    assert events[-1].event == {"i": "last"} and events[-1].line == 20_001
    assert [raw.event["i"] for raw in events[:3]] == [0, 1, 2]


def test_a_line_that_is_not_json_names_entry_and_line(tmp_path):
    name = "1/1_2024-03-02_0#0.json.gz"
    path = write_zip(tmp_path / "a.zip", {name: b'{"a": 1}\n{"a": 2}\n{"a": \n'})
    with pytest.raises(ArchiveError) as caught:
        list(iter_events(path))
    assert (caught.value.entry, caught.value.line) == (name, 3)
    assert name in str(caught.value) and "line 3" in str(caught.value)
    path = write_zip(tmp_path / "b.zip", {name: b'{"a": 1}\n[1, 2]\n'})
    with pytest.raises(ArchiveError, match="not an event object") as caught:
        list(iter_events(path))
    assert caught.value.line == 2


def test_a_corrupt_gzip_entry_names_the_entry(tmp_path):
    good = "1/1_2024-03-02_0#0.json.gz"
    bad = "1/1_2024-03-02_1#0.json.gz"
    payload = gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(1000)))
    broken = payload[:200] + bytes(b ^ 0xFF for b in payload[200:400]) + payload[400:]
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(good, gzip.compress(b'{"ok": true}\n'))
        archive.writestr(bad, broken)
    seen = []
    with pytest.raises(ArchiveError) as caught:
        for raw in iter_lines(path):
            seen.append(raw.entry)
    assert seen[0] == good
    assert caught.value.entry == bad
    assert bad in str(caught.value)
    assert caught.value.line is not None and caught.value.line >= 1


def test_a_truncated_gzip_entry_is_an_archive_error(tmp_path):
    name = "1/1_2024-03-02_0#0.json.gz"
    payload = gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(1000)))
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr(name, payload[: len(payload) // 2])
    with pytest.raises(ArchiveError, match="truncated") as caught:
        list(iter_lines(tmp_path / "a.zip"))
    assert caught.value.entry == name


def test_a_file_that_is_not_a_zip_is_an_archive_error(tmp_path):
    path = tmp_path / "page.zip"
    path.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        list(iter_events(path))
    with pytest.raises(ArchiveError, match="page.zip"):
        archive_entries(path)


def test_plain_json_entries_are_read_too(tmp_path):
    path = write_zip(
        tmp_path / "a.zip", {"1/1_2024-03-02_0#0.json": b'{"a": 1}\n'}, gzip_them=False
    )
    assert [raw.event for raw in iter_events(path)] == [{"a": 1}]


def test_iter_lines_does_not_hold_the_entry_in_memory(tmp_path):
    # 40 MB of NDJSON in one entry: reading it must not allocate anything close to that.
    import tracemalloc

    line = b'{"pad": "' + b"y" * 400 + b'"}\n'
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("1/1_2024-03-02_0#0.json.gz", "w") as entry:
            with gzip.GzipFile(fileobj=entry, mode="wb", compresslevel=1) as gz:
                block = line * 1000
                for _ in range(100):
                    gz.write(block)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_lines(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_zip_check_accepts_only_complete_archives(tmp_path):
    from dwh_helper.sources.amplitude_archive import zip_problem as _zip_problem

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("1/1_2024-03-02_0#0.json.gz", gzip.compress(b'{"a":1}\n' * 100))
    data = buffer.getvalue()
    whole = tmp_path / "whole.zip"
    whole.write_bytes(data)
    assert _zip_problem(whole, len(data)) is None
    for cut in (len(data) - 1, len(data) // 2, 10):
        part = tmp_path / f"cut{cut}.zip"
        part.write_bytes(data[:cut])
        assert "truncated" in _zip_problem(part, cut)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    assert _zip_problem(empty, empty.stat().st_size) == "empty"
