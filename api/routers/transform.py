"""`/transform/user-properties`: run the user-properties ETL synchronously over a small range."""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import (
    ApiSettingsDep,
    RepoDep,
    Resources,
    SettingsDep,
    get_resources,
    get_store,
    require_write,
)
from api.errors import AUTH_ERRORS, ApiError, error_responses
from dwh_helper.pipeline.user_properties import (
    MigrationInterrupted,
    MigrationResult,
    RunInProgress,
    migrate_user_properties,
)

log = logging.getLogger(__name__)

EARLIEST, LATEST = date(2000, 1, 1), date(2100, 12, 31)

router = APIRouter(prefix="/transform", tags=["transform"], dependencies=[Depends(require_write)])


class UserPropertiesRun(BaseModel):
    """Which raw user properties to turn into permanent and changeable rows."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["tmp_table", "s3"] = Field(
        "tmp_table", description="`tmp_table`: pending tmp_user_properties rows; `s3`: a raw file"
    )
    since: date | None = Field(None, description="tmp_table: first UTC day (inclusive)")
    until: date | None = Field(None, description="tmp_table: last UTC day (inclusive)")
    key: str | None = Field(None, description="s3: the object to read", max_length=1024)
    start_after: int | None = Field(
        None, ge=0, description="s3: skip lines up to this one (the last line already done)"
    )
    batch_size: int | None = Field(
        None, ge=1, le=100_000, description="Rows per transaction (default ETL_BATCH_SIZE)"
    )

    @model_validator(mode="after")
    def _fits_source(self) -> UserPropertiesRun:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not EARLIEST <= value <= LATEST:
                raise ValueError(f"{name} ({value}) must lie between {EARLIEST} and {LATEST}")
        if self.source == "tmp_table":
            if self.since is None or self.until is None:
                raise ValueError("source tmp_table needs `since` and `until` (YYYY-MM-DD)")
            if self.until < self.since:
                raise ValueError(f"until ({self.until}) is before since ({self.since})")
            if self.key is not None or self.start_after is not None:
                raise ValueError("`key` and `start_after` only apply to source s3")
        else:
            if not self.key:
                raise ValueError("source s3 needs `key`, the S3 object to read")
            if self.since is not None or self.until is not None:
                raise ValueError("`since` and `until` only apply to source tmp_table")
        return self


class UserPropertiesResult(BaseModel):
    """What the run did, and where to resume when it was interrupted."""

    source: str
    status: Literal["completed", "interrupted"]
    processed: int = Field(description="Records converted")
    rejected: int = Field(description="Records rejected (see load_rejects)")
    rejected_before: int = Field(0, description="Of the rejected, already rejected by a past run")
    values_nulled: int = Field(
        0, description="Invalid non-key values stored NULL and reported (the record loaded)"
    )
    values_repaired: int = Field(0, description="Values repaired (NUL characters removed)")
    permanent_inserted: int
    changeable_inserted: int
    batches: int
    unknown_keys: dict[str, int] = Field(description="Keys absent from the mapping, counted")
    error_keys: dict[str, int] = Field(default_factory=dict, description="Keys that failed")
    since: str | None = None
    until: str | None = None
    key: str | None = None
    start_after: int | None = None
    last_line: int | None = Field(None, description="s3: the last line done (resume after it)")
    failed_line: int | None = None
    error: str | None = None
    seconds: float
    resume: dict[str, Any] | None = Field(
        None, description="When interrupted: the request body that continues the run"
    )


def _response(result: MigrationResult, request: UserPropertiesRun) -> UserPropertiesResult:
    data = result.to_dict()
    known = UserPropertiesResult.model_fields
    body = UserPropertiesResult(**{name: value for name, value in data.items() if name in known})
    if result.status == "interrupted":
        resume = request.model_dump(mode="json", exclude_none=True)
        if result.source == "s3":
            resume["start_after"] = result.last_line or 0
        body.resume = resume
    return body


@router.post(
    "/user-properties",
    name="run_user_properties_transform",
    response_model=UserPropertiesResult,
    summary="Run the user-properties ETL for a small range (synchronously)",
    responses=error_responses(
        *AUTH_ERRORS, 404, 409, 422, e409="Another user-properties run is in progress"
    ),
)
def run_user_properties(
    request: UserPropertiesRun,
    repo: RepoDep,
    settings: SettingsDep,
    api: ApiSettingsDep,
    resources: Annotated[Resources, Depends(get_resources)],
) -> UserPropertiesResult:
    """Convert raw user properties into permanent and changeable rows; needs write access.

    An interrupted run answers 200 with `status: "interrupted"`, what was committed, and
    `resume`: the body that continues it.
    """
    if request.source == "tmp_table" and request.since and request.until:
        days = (request.until - request.since).days + 1
        if days > api.transform_max_days:
            raise ApiError(
                422,
                f"{days} days requested; the limit is "
                f"API_TRANSFORM_MAX_DAYS={api.transform_max_days}",
                field="until",
            )
    store = get_store(settings, resources) if request.source == "s3" else None
    try:
        result = migrate_user_properties(
            repo,
            source=request.source,
            since=request.since,
            until=request.until,
            batch_size=request.batch_size or settings.etl.batch_size,
            strict=settings.etl.strict,
            store=store,
            key=request.key,
            start_after=request.start_after,
        )
    except MigrationInterrupted as exc:
        log.warning("user-properties run interrupted: %s", exc.result.error)
        return _response(exc.result, request)
    except RunInProgress as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return _response(result, request)
