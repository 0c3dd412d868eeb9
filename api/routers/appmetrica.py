"""`/appmetrica/ping`, `/appmetrica/export`: Logs API data on demand, zipped; 202 if not ready."""

from __future__ import annotations

import codecs
import json
import logging
import re
import time
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import IO, Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ApiSettingsDep, SettingsDep, require_read
from api.downloads import WorkDirFileResponse, remove_dir, work_dir, zip_entry
from api.errors import AUTH_ERRORS, ApiError, error_responses, retry_after_header
from api.settings import ApiSettings
from dwh_helper.catalogue.appmetrica import RESOURCE_NAMES
from dwh_helper.config import Settings
from dwh_helper.pipeline.appmetrica_days import DaysDownload, day_windows, download_days
from dwh_helper.sources import date_params
from dwh_helper.sources.appmetrica import (
    DEFAULT_FIELDS,
    AppMetricaAuthError,
    AppMetricaClient,
    AppMetricaError,
    AppMetricaTooLarge,
    ExportRequest,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/appmetrica", tags=["appmetrica"], dependencies=[Depends(require_read)])

EARLIEST, LATEST = date(2010, 1, 1), date(2100, 12, 31)
"""Dates outside this range are refused (422) before AppMetrica is asked."""
_BOM = codecs.BOM_UTF8


class PingResult(BaseModel):
    """Whether the Logs API answers and is enabled for the token."""

    reachable: bool
    enabled: bool = Field(description="`logs_api_availability_status` is `enabled`")
    base_url: str
    application_ids: list[str] = Field(description="APPMETRICA_APPLICATION_ID")
    seconds: float


class Preparing(BaseModel):
    """AppMetrica is still preparing: repeat the same request after `retry_after` seconds."""

    status: Literal["preparing"] = "preparing"
    detail: str
    ready_days: list[str]
    pending_days: list[str]
    retry_after: int


def _client(settings: Settings, api: ApiSettings) -> AppMetricaClient:
    block = settings.appmetrica
    return AppMetricaClient(
        block.require_token(),
        base_url=block.base_url,
        poll_interval=block.poll_interval_seconds,
        poll_timeout=block.poll_timeout_seconds,
        timeout=block.timeout_seconds,
        max_attempts=api.appmetrica_max_attempts,
        rate_limit_wait=block.poll_interval_seconds,  # a full queue: ask again next round
    )


def _token_works(client: AppMetricaClient) -> bool:
    """Whether AppMetrica accepts the service's token (then a refusal was about the app)."""
    try:
        client.status()
    except AppMetricaError:
        return False
    return True


def _upstream_error(exc: AppMetricaError) -> ApiError:
    """The answer to an AppMetrica failure, chosen by its type and fields (never its text)."""
    if isinstance(exc, AppMetricaAuthError):
        return ApiError(502, f"AppMetrica refused the service's token: {exc}")
    if isinstance(exc, AppMetricaTooLarge):
        return ApiError(502, f"AppMetrica could not split the export finely enough: {exc}")
    if exc.retryable:
        headers = retry_after_header(exc.retry_after)
        return ApiError(503, f"AppMetrica is unavailable: {exc}", headers=headers)
    if exc.status is not None and 400 <= exc.status < 500:
        return ApiError(422, f"AppMetrica rejected the request: {exc}")
    return ApiError(502, f"AppMetrica export failed: {exc}")


@router.get(
    "/ping",
    name="ping_appmetrica",
    response_model=PingResult,
    summary="Is the AppMetrica Logs API reachable and enabled?",
    responses=error_responses(*AUTH_ERRORS, 502),
)
def ping(settings: SettingsDep, api: ApiSettingsDep) -> PingResult:
    """Ask `/management/v1/logsapi/status` with the configured token."""
    started = time.monotonic()
    with _client(settings, api) as client:
        try:
            enabled = client.status()
        except AppMetricaError as exc:
            raise _upstream_error(exc) from None
    return PingResult(
        reachable=True,
        enabled=enabled,
        base_url=settings.appmetrica.base_url,
        application_ids=list(settings.appmetrica.application_id),
        seconds=round(time.monotonic() - started, 3),
    )


def parse_moment(value: str, name: str, end_of_day: bool) -> datetime:
    """`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (a date `date_until` means its last second); a
    `DateParamError`, answered 422 naming the parameter, when it is neither."""
    return date_params.parse_moment(
        value,
        name,
        formats=date_params.DAY_OR_SECOND,
        end_of_day=end_of_day,
        earliest=EARLIEST,
        latest=LATEST,
    )


def _open_without_bom(path: Path) -> IO[bytes]:
    handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if handle.read(3) != _BOM:
        handle.seek(0)
    return handle


def _write_csv(out: IO[bytes], paths: list[Path], bom: bool) -> None:
    if bom:
        out.write(_BOM)
    wrote_header = False
    ends_with_newline = True
    for path in paths:
        with _open_without_bom(path) as handle:
            header = handle.readline()
            if not header:
                continue
            if not wrote_header:
                out.write(header)
                wrote_header = True
            last = b""
            for block in iter(lambda: handle.read(1024 * 1024), b""):  # noqa: B023
                if not ends_with_newline:
                    out.write(b"\n")
                    ends_with_newline = True
                out.write(block)
                last = block
            if last:
                ends_with_newline = last.endswith(b"\n")


def _write_json(out: IO[bytes], paths: list[Path], bom: bool) -> int:
    import ijson

    if bom:
        out.write(_BOM)
    out.write(b'{"data":[')
    count = 0
    for path in paths:
        with _open_without_bom(path) as handle:
            for item in ijson.items(handle, "data.item", use_float=True):
                if count:
                    out.write(b",")
                out.write(json.dumps(item, ensure_ascii=False).encode())
                count += 1
    out.write(b"]}")
    return count


@router.get(
    "/export",
    name="export_appmetrica_data",
    summary="Download AppMetrica Logs API data of a date range as one zipped CSV or JSON file",
    response_class=WorkDirFileResponse,
    status_code=200,
    response_model=None,
    responses={
        200: {
            "description": "`appmetrica_<application_id>_<since>_<until>.zip` with one file",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        202: {
            "model": Preparing,
            "description": "Still being prepared; repeat the same request after `Retry-After`",
        },
        **error_responses(*AUTH_ERRORS, 422, 502),
    },
)
def export(
    settings: SettingsDep,
    api: ApiSettingsDep,
    date_since: Annotated[str, Query(description="`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`")],
    date_until: Annotated[str, Query(description="Inclusive; a date means its whole day")],
    application_id: Annotated[
        str | None, Query(description="Default: the first APPMETRICA_APPLICATION_ID")
    ] = None,
    fields: Annotated[
        str | None, Query(description="Comma-separated Logs API fields; default: all")
    ] = None,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",  # noqa: A002
    date_dimension: Annotated[Literal["default", "receive"], Query()] = "default",
    use_utf8_bom: bool = True,
    skip_unavailable_shards: bool = False,
    resource: Annotated[
        Literal[RESOURCE_NAMES],  # the field catalogue's resources
        Query(description="Logs API resource"),
    ] = "events",
) -> WorkDirFileResponse | JSONResponse:
    """Export day by day, accumulated into one file, zipped; 202 while AppMetrica prepares.

    Waits up to `API_APPMETRICA_WAIT_SECONDS`; past it the answer is 202 with `Retry-After`,
    and repeating the same request continues the same preparation at AppMetrica.
    """
    since = parse_moment(date_since, "date_since", end_of_day=False)
    until = parse_moment(date_until, "date_until", end_of_day=True)
    if until < since:
        raise ApiError(422, f"date_until={date_until} is before date_since", field="date_until")
    windows = day_windows(since, until)
    if len(windows) > api.appmetrica_max_days:
        raise ApiError(
            422,
            f"{len(windows)} days requested; the limit is "
            f"API_APPMETRICA_MAX_DAYS={api.appmetrica_max_days}",
            field="date_until",
        )
    app_id = application_id or next(iter(settings.appmetrica.application_id), None)
    if not app_id:
        raise ApiError(
            422,
            "no application_id: pass one or set APPMETRICA_APPLICATION_ID",
            field="application_id",
        )
    if not re.fullmatch(r"[0-9]{1,20}", app_id):
        raise ApiError(
            422, f"application_id={app_id[:40]!r} must be numeric", field="application_id"
        )
    known = DEFAULT_FIELDS[resource]
    chosen = tuple(item.strip() for item in fields.split(",") if item.strip()) if fields else known
    unknown = [item for item in chosen if item not in known]
    if unknown or not chosen:
        raise ApiError(
            422,
            f"unknown {resource} fields {unknown[:10]}; valid: {', '.join(known)}",
            field="fields",
        )
    requests = [
        ExportRequest(
            resource=resource,
            application_id=app_id,
            since=start,
            until=end,
            fields=chosen,
            date_dimension=date_dimension,
            use_utf8_bom=use_utf8_bom,
            skip_unavailable_shards=skip_unavailable_shards,
            fmt=format,
        )
        for start, end in windows
    ]
    name = f"appmetrica_{app_id}_{since:%Y%m%d}_{until:%Y%m%d}"
    started = time.monotonic()
    with work_dir(prefix="dwh-api-appmetrica-") as workdir:
        with _client(settings, api) as client:
            try:
                download = download_days(
                    client,
                    requests,
                    workdir,
                    max_queued=api.appmetrica_max_queued,
                    wait_seconds=api.appmetrica_wait_seconds,
                )
            except AppMetricaError as exc:
                log.warning("appmetrica export %s failed: %s", name, type(exc).__name__)
                if isinstance(exc, AppMetricaAuthError) and _token_works(client):
                    raise ApiError(
                        422,
                        f"application_id={app_id}: the service's AppMetrica token has no access "
                        "to this application; use one of APPMETRICA_APPLICATION_ID or ask for "
                        "access",
                        field="application_id",
                    ) from None
                raise _upstream_error(exc) from None
        if not download.complete:
            remove_dir(workdir)
            return _preparing(download, api, time.monotonic() - started)
        target = workdir / f"{name}.zip"
        paths = download.files()
        entry = f"appmetrica_{resource}_{app_id}_{since:%Y%m%d}_{until:%Y%m%d}.{format}"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
            with zipped.open(zip_entry(entry), "w", force_zip64=True) as out:
                if format == "csv":
                    _write_csv(out, paths, use_utf8_bom)
                else:
                    _write_json(out, paths, use_utf8_bom)
        for path in paths:
            path.unlink(missing_ok=True)
    log.info(
        "appmetrica export %s: %d day(s), %d file(s), %d bytes zipped in %.2fs",
        name,
        len(requests),
        len(paths),
        target.stat().st_size,
        time.monotonic() - started,
    )
    return WorkDirFileResponse(
        target, workdir, filename=f"{name}.zip", media_type="application/zip"
    )


def _preparing(download: DaysDownload, api: ApiSettings, waited: float) -> JSONResponse:
    pending = download.pending_days()
    body = Preparing(
        detail=(
            f"AppMetrica is still preparing {len(pending)} of {len(download.days)} day(s) after "
            f"{waited:.0f}s; repeat the same request in {api.appmetrica_retry_after_seconds}s"
        ),
        ready_days=download.ready_days(),
        pending_days=pending,
        retry_after=api.appmetrica_retry_after_seconds,
    )
    log.info("appmetrica export: %d day(s) still preparing, answered 202", len(pending))
    return JSONResponse(
        status_code=202,
        content=body.model_dump(),
        headers={"Retry-After": str(api.appmetrica_retry_after_seconds)},
    )
