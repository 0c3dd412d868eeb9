"""Fixtures of the API tests: the app on the real PostgreSQL, moto's S3 and a Yandex ID stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import configure, create_app
from api.settings import ApiSettings
from devtools.sandbox.s3 import LocalS3
from devtools.sandbox.yandex_id import DEMO_TOKENS, YandexIdSandbox
from dwh_helper.config import (
    AmplitudeSettings,
    AppMetricaSettings,
    AuthSettings,
    EtlSettings,
    LoggingSettings,
    PostgresSettings,
    S3Settings,
    Settings,
    YandexSettings,
)

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "Bearer demo-write-token"}
STRANGER = {"Authorization": "OAuth demo-stranger-token"}


class FakeClock:
    """A monotonic clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def yandex_id() -> Iterator[YandexIdSandbox]:
    """The Yandex ID stand-in with the demo tokens plus one issued to another application."""
    tokens = dict(DEMO_TOKENS)
    tokens["other-app-token"] = {"login": "demo-writer", "id": "9", "client_id": "someone-else"}
    with YandexIdSandbox(tokens, hang_seconds=5) as sandbox:
        yield sandbox


@pytest.fixture
def yandex(yandex_id: YandexIdSandbox) -> Iterator[YandexIdSandbox]:
    """The stand-in, answering normally at the start and the end of each test."""
    yandex_id.set_mode("ok")
    yield yandex_id
    yandex_id.set_mode("ok")


def build_settings(
    dsn: str, s3: LocalS3 | None, bucket: str | None, yandex_url: str, **blocks: object
) -> Settings:
    """Settings pointing at the test's database, bucket and Yandex ID stand-in."""
    values: dict[str, object] = {
        "db": PostgresSettings(dsn=SecretStr(dsn), minconn=0, maxconn=4),
        "s3": S3Settings(
            endpoint_url=s3.endpoint_url if s3 else "http://127.0.0.1:9",
            region="us-east-1",
            bucket_name=bucket,
            access_key_id=SecretStr("testing"),
            secret_access_key=SecretStr("testing"),
        ),
        "auth": AuthSettings(
            read_access=["Demo-Reader"], write_access=["demo-writer"], cache_ttl_seconds=300
        ),
        # generous: a machine that stalls for half a second must not turn the healthy stand-in
        # into a 503 (CI saw one); tests of a hanging Yandex ID set a short budget themselves
        "yandex": YandexSettings(login_url=yandex_url, timeout_seconds=5, client_id="test-app"),
        "amplitude": AmplitudeSettings(),
        "appmetrica": AppMetricaSettings(),
        "etl": EtlSettings(),
        "logging": LoggingSettings(),
    }
    values.update(blocks)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    """The auth cache's clock."""
    return FakeClock()


@pytest.fixture
def api_settings() -> ApiSettings:
    """API limits small enough to test."""
    return ApiSettings(
        db_max_post_rows=50, appmetrica_wait_seconds=2, max_body_mb=1, db_max_body_mb=1
    )


NO_DATABASE = "host=127.0.0.1 port=9 dbname=none user=none connect_timeout=1"
"""DSN of tests not marked `db`: nothing listens there, so any use of the DB shows."""


@pytest.fixture
def settings(request: pytest.FixtureRequest, yandex: YandexIdSandbox) -> Settings:
    """Settings of one test: the Yandex ID stand-in; a fresh database if marked `db`, a fresh
    bucket on moto's server if marked `s3` (else addresses where nothing listens)."""
    needs_db = request.node.get_closest_marker("db") is not None
    needs_s3 = request.node.get_closest_marker("s3") is not None
    dsn = request.getfixturevalue("dwh_dsn") if needs_db else NO_DATABASE
    s3 = request.getfixturevalue("s3_server") if needs_s3 else None
    bucket = request.getfixturevalue("bucket") if needs_s3 else "no-such-bucket"
    return build_settings(dsn, s3, bucket, yandex.url)


@pytest.fixture(scope="session")
def shared_app() -> FastAPI:
    """One app for the session (building routes takes a while); each test re-points it."""
    return create_app()


@pytest.fixture
def make_client(
    shared_app: FastAPI, clock: FakeClock
) -> Callable[[Settings, ApiSettings], TestClient]:
    """`make_client(settings, api_settings)`: a TestClient (use it in `with`) on the shared app
    configured with these settings, fresh shared clients and the test's clock."""

    def make(settings: Settings, api_settings: ApiSettings) -> TestClient:
        configure(shared_app, settings, api_settings, clock=clock)
        return TestClient(shared_app, raise_server_exceptions=False)

    return make


@pytest.fixture
def client(
    make_client: Callable[[Settings, ApiSettings], TestClient],
    settings: Settings,
    api_settings: ApiSettings,
) -> Iterator[TestClient]:
    """A TestClient on the app configured for this test."""
    with make_client(settings, api_settings) as test_client:
        yield test_client


@pytest.fixture
def amplitude_sandbox() -> Iterator[object]:
    """The Amplitude Export API stand-in (projects `web` and `mobile`), fresh faults per test."""
    from devtools.sandbox.amplitude import AmplitudeSandbox

    with AmplitudeSandbox(events_per_hour=10) as sandbox:
        yield sandbox


@pytest.fixture
def amplitude_settings(amplitude_sandbox) -> AmplitudeSettings:  # type: ignore[no-untyped-def]
    """`AMPLITUDE_*` pointing at the stand-in, one attempt per window (no retry waits)."""
    web, mobile = amplitude_sandbox.project("web"), amplitude_sandbox.project("mobile")
    return AmplitudeSettings(
        web_client_id=SecretStr(web.api_key),
        web_secret_key=SecretStr(web.secret_key),
        mobile_client_id=SecretStr(mobile.api_key),
        mobile_secret_key=SecretStr(mobile.secret_key),
        base_url=amplitude_sandbox.url,
        timeout_seconds=5,
        max_attempts=1,
    )


@pytest.fixture
def appmetrica_sandbox() -> Iterator[object]:
    """The AppMetrica Logs API stand-in: application 1111, 30 events a day, 2 polls before 200."""
    from devtools.sandbox.appmetrica import AppMetricaSandbox

    with AppMetricaSandbox(application_ids=("1111", "2222"), events_per_day=30) as sandbox:
        yield sandbox


@pytest.fixture
def appmetrica_settings(appmetrica_sandbox) -> AppMetricaSettings:  # type: ignore[no-untyped-def]
    """`APPMETRICA_*` pointing at the stand-in, polling every 10 ms."""
    from devtools.sandbox.appmetrica import DEMO_TOKEN

    return AppMetricaSettings(
        base_url=appmetrica_sandbox.url,
        token=SecretStr(DEMO_TOKEN),
        application_id=["1111"],
        poll_interval_seconds=0.01,
        timeout_seconds=5,
    )
