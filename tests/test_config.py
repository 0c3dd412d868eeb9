"""Settings keep the original .env names and say which variable to fix."""

from __future__ import annotations

import pytest

from dwh_helper.config import Settings, SettingsError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env file is read


def test_original_variable_names(monkeypatch):
    env = {
        "DB_HOST": "db.internal",
        "DB_PORT": "6432",
        "DB_NAME": "dwh",
        "DB_USER": "etl",
        "DB_PASSWORD": "pw",
        "DB_MINCONN": "2",
        "DB_MAXCONN": "8",
        "DB_MAX_PARAMS_PER_QUERY": "30000",
        "DB_MAX_ROWS_PER_INSERT": "1000",
        "DB_SAFETY_FACTOR": "0.5",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "S3_REGION": "ru-central1",
        "S3_BUCKET_NAME": "raw",
        "S3_ACCESS_KEY_ID": "ak",
        "S3_SECRET_ACCESS_KEY": "sk",
        "AMPLITUDE_WEB_CLIENT_ID": "wk",
        "AMPLITUDE_WEB_SECRET_KEY": "ws",
        "AMPLITUDE_MOBILE_CLIENT_ID": "mk",
        "AMPLITUDE_MOBILE_SECRET_KEY": "ms",
        "AMPLITUDE_REGION": "eu",
        "APPMETRICA_BASE_URL": "http://127.0.0.1:8082",
        "APPMETRICA_APPLICATION_ID": "1111, 2222",
        "APPMETRICA_POLL_INTERVAL_SECONDS": "5",
        "APPMETRICA_POLL_TIMEOUT_SECONDS": "60",
        "APPMETRICA_TOKEN": "t",
        "AUTH_READ_ACCESS": "Alice, bob",
        "AUTH_WRITE_ACCESS": "carol",
        "YANDEX_CLIENT_ID": "cid",
        "ETL_BATCH_SIZE": "1000",
        "LOGGING_LEVEL": "debug",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert "host=db.internal" in settings.db.conninfo() and "port=6432" in settings.db.conninfo()
    assert settings.db.max_rows_per_insert == 1000 and settings.db.safety_factor == 0.5
    assert settings.s3.require_bucket() == "raw"
    assert settings.amplitude.credentials("mobile") == ("mk", "ms")
    assert settings.amplitude.region == "eu"
    assert settings.appmetrica.application_id == ["1111", "2222"]
    assert settings.appmetrica.require_token() == "t"
    assert settings.auth.read_access == ["Alice", "bob"]
    assert settings.yandex.client_id == "cid"
    assert settings.etl.batch_size == 1000
    assert settings.logging.level == "DEBUG"


def test_invalid_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("DB_PORT", "five thousand")
    with pytest.raises(SettingsError, match="DB_PORT"):
        Settings()


def test_secrets_are_not_echoed(monkeypatch):
    monkeypatch.setenv("DB_SAFETY_FACTOR", "2")
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    with pytest.raises(SettingsError) as error:
        Settings()
    assert "DB_SAFETY_FACTOR" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert "hunter2" not in repr(Settings.__dict__)


def test_missing_values_name_what_to_set(monkeypatch):
    settings = Settings()
    with pytest.raises(SettingsError, match="AMPLITUDE_WEB_CLIENT_ID and AMPLITUDE_WEB_SECRET_KEY"):
        settings.amplitude.credentials("web")
    with pytest.raises(SettingsError, match="S3_BUCKET_NAME"):
        settings.s3.require_bucket()
    with pytest.raises(SettingsError, match="APPMETRICA_TOKEN"):
        settings.appmetrica.require_token()
    with pytest.raises(SettingsError, match="unknown Amplitude source"):
        settings.amplitude.credentials("tv")


def test_env_example_values_are_valid(monkeypatch, tmp_path):
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[1] / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    settings = Settings()  # reads ./.env
    assert settings.db.max_rows_per_insert is None
    assert settings.s3.require_bucket() == "dwh-raw"
    assert settings.amplitude.base_url is None
    assert settings.auth.write_access == ["data.engineer"]
