"""Settings of the HTTP service itself (`API_*`); the shared blocks live in `dwh_helper.config`."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Limits and waits of the API (`API_*` variables)."""

    model_config = SettingsConfigDict(
        env_prefix="API_",
        env_file=".env",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    db_pool_timeout_seconds: float = Field(10.0, gt=0, description="Wait for a free DB connection")
    db_max_post_rows: int = Field(50_000, ge=1, description="Rows one POST /db/... may carry")
    max_body_mb: int = Field(
        256, ge=1, description="Largest request body (uploads), counted as it arrives"
    )
    db_max_body_mb: int = Field(32, ge=1, description="Largest body of a POST /db/... (JSON rows)")
    amplitude_max_days: int = Field(31, ge=1, description="Longest range of /amplitude/export")
    appmetrica_max_days: int = Field(31, ge=1, description="Longest range of /appmetrica/export")
    appmetrica_wait_seconds: float = Field(
        60.0, ge=0, description="How long /appmetrica/export waits before answering 202"
    )
    appmetrica_retry_after_seconds: int = Field(
        30, ge=1, description="Retry-After of a 202 from /appmetrica/export"
    )
    appmetrica_max_queued: int = Field(
        3, ge=1, description="Requests queued at AppMetrica at once (it allows 3 per application)"
    )
    appmetrica_max_attempts: int = Field(
        3, ge=1, description="Tries of an AppMetrica request on 5xx / network errors"
    )
    transform_max_days: int = Field(
        31, ge=1, description="Longest since..until range of /transform/user-properties"
    )
    s3_max_key_length: int = Field(1024, ge=1, le=1024, description="Longest accepted S3 key")
    patch_copy_threshold_mb: int = Field(
        16, ge=5, description="Objects above this are patched by multipart copy, not in memory"
    )


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    """The process-wide API settings, read once."""
    return ApiSettings()
