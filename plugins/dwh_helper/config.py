"""Settings for the library and the API, read from the environment (and `.env`).

Every block keeps the variable names of the original application's `.env`
(`DB_HOST`, `S3_BUCKET_NAME`, `AMPLITUDE_WEB_CLIENT_ID`, ...). A missing or
invalid value raises `SettingsError` naming the variable to set.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AmplitudeSource = Literal["web", "mobile"]
AMPLITUDE_SOURCES: tuple[AmplitudeSource, ...] = ("web", "mobile")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable to set."""


def _block(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `DB_MAX_ROWS_PER_INSERT=` in .env means "not set"
    )


CommaList = Annotated[list[str], NoDecode]
"""A list given as comma-separated text in the environment."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PostgresSettings(BaseSettings):
    """The DWH PostgreSQL server (`DB_*`)."""

    model_config = _block("DB_")

    dsn: SecretStr | None = Field(None, description="Full libpq DSN; overrides host/port/...")
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    name: str = "dwh"
    user: str = "postgres"
    password: SecretStr = SecretStr("")
    minconn: int = Field(1, ge=0)
    maxconn: int = Field(10, ge=1)
    max_params_per_query: int = Field(65535, ge=1, le=65535)
    max_rows_per_insert: int | None = Field(None, ge=1)
    safety_factor: float = Field(0.8, gt=0, le=1)
    select_default_limit: int = Field(100, ge=1)
    select_max_limit: int = Field(10000, ge=1)

    def conninfo(self) -> str:
        """The libpq connection string for this server."""
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.name,
            user=self.user,
            password=self.password.get_secret_value() or None,
        )


class S3Settings(BaseSettings):
    """The raw-file bucket (`S3_*`)."""

    model_config = _block("S3_")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    bucket_name: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    multipart_threshold_mb: int = Field(64, ge=5)

    def require_bucket(self) -> str:
        """The bucket name, or a `SettingsError` saying to set `S3_BUCKET_NAME`."""
        if not self.bucket_name:
            raise SettingsError("S3_BUCKET_NAME is not set: name the bucket raw files land in")
        return self.bucket_name


class AmplitudeSettings(BaseSettings):
    """Amplitude Export API (`AMPLITUDE_*`)."""

    model_config = _block("AMPLITUDE_")

    web_client_id: SecretStr | None = None
    web_secret_key: SecretStr | None = None
    mobile_client_id: SecretStr | None = None
    mobile_secret_key: SecretStr | None = None
    region: Literal["us", "eu"] = "us"
    base_url: str | None = None
    timeout_seconds: float = Field(600.0, gt=0)
    max_attempts: int = Field(6, ge=1)

    def credentials(self, source: str) -> tuple[str, str]:
        """(API key, secret key) of a project, or a `SettingsError` naming what to set."""
        if source not in AMPLITUDE_SOURCES:
            raise SettingsError(
                f"unknown Amplitude source {source!r}; use one of {AMPLITUDE_SOURCES}"
            )
        key = getattr(self, f"{source}_client_id")
        secret = getattr(self, f"{source}_secret_key")
        missing = [
            f"AMPLITUDE_{source.upper()}_{name}"
            for name, value in (("CLIENT_ID", key), ("SECRET_KEY", secret))
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise SettingsError(f"Amplitude project {source!r} needs {' and '.join(missing)}")
        return key.get_secret_value(), secret.get_secret_value()


class AppMetricaSettings(BaseSettings):
    """AppMetrica Logs API (`APPMETRICA_*`)."""

    model_config = _block("APPMETRICA_")

    base_url: str = "https://api.appmetrica.yandex.ru"
    token: SecretStr | None = None
    application_id: CommaList = Field(default_factory=list)
    poll_interval_seconds: float = Field(10.0, gt=0)
    poll_timeout_seconds: float = Field(1800.0, gt=0)
    timeout_seconds: float = Field(600.0, gt=0)

    _split = field_validator("application_id", mode="before")(_split_list)

    def require_token(self) -> str:
        """The OAuth token, or a `SettingsError` saying to set `APPMETRICA_TOKEN`."""
        if self.token is None or not self.token.get_secret_value():
            raise SettingsError("APPMETRICA_TOKEN is not set: an OAuth token with Logs API access")
        return self.token.get_secret_value()


class AuthSettings(BaseSettings):
    """Who may call the API (`AUTH_*`)."""

    model_config = _block("AUTH_")

    read_access: CommaList = Field(default_factory=list)
    write_access: CommaList = Field(default_factory=list)
    client_id: str | None = None
    cache_ttl_seconds: float = Field(300.0, ge=0)

    _split = field_validator("read_access", "write_access", mode="before")(_split_list)


class YandexSettings(BaseSettings):
    """Yandex ID, which checks the API's OAuth tokens (`YANDEX_*`)."""

    model_config = _block("YANDEX_")

    client_id: str | None = None
    login_url: str = "https://login.yandex.ru"
    timeout_seconds: float = Field(5.0, gt=0)


class EtlSettings(BaseSettings):
    """Batch sizes and thresholds of the pipelines (`ETL_*`)."""

    model_config = _block("ETL_")

    batch_size: int = Field(5000, ge=1)
    load_batch_size: int = Field(10000, ge=1)
    reject_ratio: float = Field(0.01, ge=0, le=1)
    strict: bool = False
    temp_dir: Path | None = None
    """Where loads keep their temporary files (one directory per load); None: the system's."""
    temp_max_age: int = Field(3600, ge=60)
    """Seconds after which a load's leftover temporary directory counts as abandoned."""
    retry_delay: float = Field(120.0, gt=0)
    """Seconds before a failed task's first retry (doubling per retry, at most 30 minutes)."""
    optimistic_copy: bool = True
    """Loaders (and the user-properties ETL's changeable rows) COPY each batch straight into
    its tables, falling back to staging on a conflict."""
    writer_switch_interval: float = Field(0.0005, ge=0)
    """Python's GIL switch interval (seconds) while a batch writer thread runs; 0: unchanged."""


class LoggingSettings(BaseSettings):
    """Log output (`LOGGING_*`)."""

    model_config = _block("LOGGING_")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    _upper = field_validator("level", mode="before")(
        lambda value: value.upper() if isinstance(value, str) else value
    )


_BLOCKS: dict[str, type[BaseSettings]] = {
    "db": PostgresSettings,
    "s3": S3Settings,
    "amplitude": AmplitudeSettings,
    "appmetrica": AppMetricaSettings,
    "auth": AuthSettings,
    "yandex": YandexSettings,
    "etl": EtlSettings,
    "logging": LoggingSettings,
}


class Settings:
    """All settings blocks, each read from its own `PREFIX_*` variables."""

    db: PostgresSettings
    s3: S3Settings
    amplitude: AmplitudeSettings
    appmetrica: AppMetricaSettings
    auth: AuthSettings
    yandex: YandexSettings
    etl: EtlSettings
    logging: LoggingSettings

    def __init__(self, **blocks: BaseSettings) -> None:
        for name, cls in _BLOCKS.items():
            block = blocks.get(name)
            if block is None:
                block = _read_block(cls)
            setattr(self, name, block)


_SECRET_WORDS = re.compile("PASSWORD|SECRET|TOKEN|KEY|DSN")


def _read_block(cls: type[BaseSettings]) -> BaseSettings:
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = []
        for error in exc.errors():
            variable = (prefix + str(error["loc"][0])).upper() if error["loc"] else prefix
            shown = "***" if _SECRET_WORDS.search(variable) else repr(error.get("input"))
            problems.append(f"{variable}: {error['msg']} (got {shown})")
        raise SettingsError(
            "invalid settings; fix these variables: " + "; ".join(problems)
        ) from None


def etl_settings() -> EtlSettings:
    """The `ETL_*` settings, read now (SettingsError names a bad variable)."""
    return _read_block(EtlSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once (idempotent); never logs secrets itself."""
    root = logging.getLogger()
    chosen = level or LoggingSettings().level
    if not root.handlers:
        logging.basicConfig(level=chosen, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        root.setLevel(chosen)
