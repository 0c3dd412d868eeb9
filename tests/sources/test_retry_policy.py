"""The sources' one retry policy, proved over real HTTP against the sandboxes (waits recorded).

Both clients: `Retry-After` as seconds and as an HTTP-date is waited exactly,
5xx answers are retried with jittered exponential backoff then succeed, a
non-retryable 4xx fails at once with its status in the error, and the
attempts run out into an error whose fields say what happened.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import pytest

from devtools.sandbox.amplitude import AmplitudeFaults, AmplitudeSandbox
from devtools.sandbox.appmetrica import AppMetricaFaults, AppMetricaSandbox
from dwh_helper.sources.amplitude import (
    AmplitudeClient,
    AmplitudeError,
    AmplitudeUnavailable,
    AmplitudeWindowTooLarge,
    ExportWindow,
)
from dwh_helper.sources.appmetrica import (
    AppMetricaBadRequest,
    AppMetricaClient,
    AppMetricaUnavailable,
)
from dwh_helper.sources.http_retry import RetryPolicy, retry_after_seconds
from tests.support.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.unit

WINDOW = ExportWindow.for_day(date(2024, 3, 2))
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TOKEN = "test-token"
DAY = (datetime(2024, 3, 1), datetime(2024, 3, 1, 23, 59, 59))


def http_date(seconds_from_now: float) -> str:
    return format_datetime(NOW + timedelta(seconds=seconds_from_now), usegmt=True)


class Clock:
    """Records every wait; monotonic() advances only by them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def amplitude(sandbox: AmplitudeSandbox, clock: Clock, **options: object) -> AmplitudeClient:
    project = sandbox.project("web")
    return AmplitudeClient(
        project.api_key,
        project.secret_key,
        base_url=sandbox.url,
        sleep=clock.sleep,
        now=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def appmetrica(base_url: str, clock: Clock, **options: object) -> AppMetricaClient:
    settings: dict[str, object] = {"poll_interval": 10.0, "max_attempts": 4} | options
    return AppMetricaClient(
        TOKEN,
        base_url=base_url,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        now=lambda: NOW,
        **settings,  # type: ignore[arg-type]
    )


def appmetrica_sandbox(**faults: object) -> AppMetricaSandbox:
    return AppMetricaSandbox(TOKEN, ("1111",), faults=AppMetricaFaults(**faults))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the policy itself


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert retry_after_seconds("7", NOW) == 7.0
    assert retry_after_seconds(" 2.5 ", NOW) == 2.5
    assert retry_after_seconds(http_date(30), NOW) == 30.0
    assert retry_after_seconds(http_date(-30), NOW) == 0.0  # a date in the past: go now
    assert retry_after_seconds("-3", NOW) == 0.0
    for unusable in (None, "", "soon", "Mon, 99 Foo 2025"):
        assert retry_after_seconds(unusable, NOW) is None


def test_backoff_doubles_up_to_the_cap_and_keeps_at_least_half():
    policy = RetryPolicy(max_attempts=8, backoff_base=0.5, backoff_max=3.0, rng=random.Random(1))
    for attempt in range(1, 9):
        cap = min(3.0, 0.5 * 2 ** (attempt - 1))
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert cap / 2 <= min(waits) and max(waits) <= cap
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)


# --------------------------------------------------------------------------- Amplitude


@pytest.mark.parametrize(
    ("header", "expected"), [("9", 9.0), (http_date(12), 12.0)], ids=["seconds", "http-date"]
)
def test_amplitude_429_waits_what_retry_after_says(header, expected, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dwh_helper.sources.amplitude")
    clock = Clock()
    faults = AmplitudeFaults(rate_limit_first=2, retry_after=header)  # type: ignore[arg-type]
    with AmplitudeSandbox(faults=faults) as sandbox, amplitude(sandbox, clock) as client:
        result = client.export(WINDOW, tmp_path)
        assert [request.status for request in sandbox.requests] == [429, 429, 200]
        assert result.files[0].path.read_bytes() == sandbox.archive_bytes("web", WINDOW)
    assert clock.sleeps == [expected, expected]
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert (
        retries
        == [
            f"amplitude export project=web window={WINDOW.label()}: retrying in {expected:.1f}s "
            "(HTTP 429: 'Too many requests')"
        ]
        * 2
    )


def test_amplitude_5xx_then_success_backs_off_with_jitter(tmp_path):
    clock = Clock()
    faults = AmplitudeFaults(server_error_first=3)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        amplitude(sandbox, clock, backoff_base=2.0, backoff_max=5.0) as client,
    ):
        client.export(WINDOW, tmp_path)
        statuses = [request.status for request in sandbox.requests]
    assert len(statuses) == 4 and statuses[3] == 200 and all(s >= 500 for s in statuses[:3])
    assert len(clock.sleeps) == 3
    for attempt, waited in enumerate(clock.sleeps, start=1):
        cap = min(5.0, 2.0 * 2 ** (attempt - 1))
        assert cap / 2 <= waited <= cap


def test_amplitude_gives_up_with_the_last_status_in_the_error(tmp_path):
    clock = Clock()
    faults = AmplitudeFaults(rate_limit_first=10, retry_after=3)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        amplitude(sandbox, clock, max_attempts=3) as client,
    ):
        with pytest.raises(AmplitudeUnavailable) as caught:
            client.export(WINDOW, tmp_path)
        assert sandbox.export_calls == 3
    error = caught.value
    assert (error.status, error.retry_after, error.retryable, error.timed_out) == (
        429,
        3.0,
        True,
        False,
    )
    assert "after 3 attempt(s)" in str(error)
    assert clock.sleeps == [3.0, 3.0]


def test_amplitude_timeouts_are_marked_timed_out(tmp_path):
    clock = Clock()
    faults = AmplitudeFaults(stall_first=5, stall_seconds=1.0)
    with (
        AmplitudeSandbox(faults=faults) as sandbox,
        amplitude(sandbox, clock, timeout=0.2, max_attempts=2) as client,
    ):
        with pytest.raises(AmplitudeUnavailable) as caught:
            client.export(WINDOW, tmp_path)
    assert caught.value.timed_out is True
    assert caught.value.status is None
    assert len(clock.sleeps) == 1


def test_amplitude_a_non_retryable_4xx_fails_at_once_with_its_status(tmp_path):
    clock = Clock()
    hour = datetime(2024, 3, 2, 5, tzinfo=UTC)
    faults = AmplitudeFaults(too_large_hours={hour})
    with AmplitudeSandbox(faults=faults) as sandbox, amplitude(sandbox, clock) as client:
        with pytest.raises(AmplitudeWindowTooLarge) as caught:
            client.export(ExportWindow(hour, hour), tmp_path)
        assert sandbox.export_calls == 1
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert clock.sleeps == []
    project = sandbox.project("web")
    with AmplitudeSandbox() as sandbox:
        client = AmplitudeClient(
            project.api_key, "wrong", base_url=sandbox.url, sleep=clock.sleep, now=lambda: NOW
        )
        with client, pytest.raises(AmplitudeError) as caught:
            client.export(WINDOW, tmp_path)
        assert sandbox.export_calls == 1
    assert (caught.value.status, caught.value.retryable) == (403, False)
    assert clock.sleeps == []


# --------------------------------------------------------------------------- AppMetrica


@pytest.mark.parametrize(
    ("header", "expected"), [("7", 7.0), (http_date(11), 11.0)], ids=["seconds", "http-date"]
)
def test_appmetrica_503_waits_what_retry_after_says(header, expected, tmp_path):
    clock = Clock()
    with appmetrica_sandbox(ready_after=0) as sandbox:
        faults = [Fault(503, {"Retry-After": header}, "Service Unavailable")] * 2
        with FaultProxy(sandbox.url, faults) as proxy, appmetrica(proxy.url, clock) as client:
            (part,) = client.export("events", "1111", *DAY, dest_dir=tmp_path)
            assert proxy.answered == [503, 503, 200]
        assert part.size > 0
    assert clock.sleeps == [expected, expected]


@pytest.mark.parametrize(
    ("header", "expected"), [("90", 90.0), (http_date(75), 75.0)], ids=["seconds", "http-date"]
)
def test_appmetrica_429_waits_retry_after_when_longer_than_rate_limit_wait(
    header, expected, tmp_path
):
    clock = Clock()
    with appmetrica_sandbox(ready_after=1) as sandbox:
        faults = [Fault(429, {"Retry-After": header}, "There are already 3 enqueued queries")]
        with (
            FaultProxy(sandbox.url, faults) as proxy,
            appmetrica(proxy.url, clock, rate_limit_wait=30.0) as client,
        ):
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
            assert proxy.answered == [429, 202, 200]
    assert clock.sleeps == [expected, 10.0]


def test_appmetrica_status_retries_a_429_honouring_its_http_date(tmp_path):
    clock = Clock()
    with appmetrica_sandbox() as sandbox:
        faults = [Fault(429, {"Retry-After": http_date(4)}, "Too many requests")]
        with FaultProxy(sandbox.url, faults) as proxy, appmetrica(proxy.url, clock) as client:
            assert client.status() is True
            assert proxy.answered == [429, 200]
    assert clock.sleeps == [4.0]


def test_appmetrica_5xx_then_success_and_giving_up_keeps_the_status(tmp_path):
    clock = Clock()
    with appmetrica_sandbox(ready_after=0, server_error_first=2) as sandbox:
        with appmetrica(sandbox.url, clock, backoff_base=1.0) as client:
            client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert [r.status for r in sandbox.requests] == [500, 500, 200]
    assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0
    clock = Clock()
    with appmetrica_sandbox(server_error_first=10) as sandbox:
        with appmetrica(sandbox.url, clock, max_attempts=2) as client:
            with pytest.raises(AppMetricaUnavailable) as caught:
                client.export("events", "1111", *DAY, dest_dir=tmp_path)
        assert len(sandbox.requests) == 2
    assert (caught.value.status, caught.value.retryable) == (500, True)
    assert "gave up after 2 attempts" in str(caught.value)


def test_appmetrica_a_non_retryable_4xx_fails_at_once_with_its_status(tmp_path):
    clock = Clock()
    with appmetrica_sandbox() as sandbox, appmetrica(sandbox.url, clock) as client:
        with pytest.raises(AppMetricaBadRequest) as caught:
            client.export("events", "1111", *DAY, fields=["colour"], dest_dir=tmp_path)
        assert len(sandbox.requests) == 1
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert clock.sleeps == []
