"""`/amplitude/export`: a range of days from the Amplitude Export API as one zipped NDJSON file."""

from __future__ import annotations

import logging
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from api.deps import ApiSettingsDep, SettingsDep, require_read
from api.downloads import WorkDirFileResponse, work_dir, zip_entry
from api.errors import AUTH_ERRORS, ApiError, error_responses, retry_after_header
from dwh_helper.sources.amplitude import AmplitudeClient
from dwh_helper.sources.amplitude_archive import iter_lines
from dwh_helper.sources.amplitude_errors import (
    AmplitudeAuthError,
    AmplitudeDataNotReady,
    AmplitudeError,
)
from dwh_helper.sources.amplitude_window import ExportWindow
from dwh_helper.sources.date_params import DAY, parse_moment

log = logging.getLogger(__name__)

router = APIRouter(prefix="/amplitude", tags=["amplitude"], dependencies=[Depends(require_read)])

EARLIEST = date(2010, 1, 1)
"""No Amplitude project holds data before this day."""

DayParam = Annotated[
    str, Query(description="A UTC day, `YYYYMMDD`", examples=["20240501"], max_length=8)
]


def parse_day(value: str, name: str) -> date:
    """A `YYYYMMDD` query value as a date (a `DateParamError`, answered 422 naming the
    parameter, when it is not one)."""
    moment = parse_moment(
        value, name, formats=DAY, earliest=EARLIEST, latest=datetime.now(UTC).date()
    )
    return moment.date()


def _upstream_error(exc: AmplitudeError, source: str) -> ApiError:
    """The answer to an Amplitude failure, chosen by its type and fields (never its text)."""
    if isinstance(exc, AmplitudeDataNotReady):
        return ApiError(422, str(exc), field="end")
    if isinstance(exc, AmplitudeAuthError):
        return ApiError(502, f"Amplitude refused the {source!r} project's keys: {exc}")
    if exc.retryable:
        headers = retry_after_header(exc.retry_after)
        return ApiError(504 if exc.timed_out else 502, str(exc), headers=headers)
    return ApiError(502, f"Amplitude export failed: {exc}")


def write_ndjson_zip(
    client: AmplitudeClient, first: date, last: date, workdir: Path, target: Path, entry: str
) -> tuple[int, int]:
    """Export `first`..`last` day by day into one NDJSON entry of `target`; (events, days)."""
    events = days = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zipped:
        with zipped.open(zip_entry(entry), "w", force_zip64=True) as out:
            day = first
            while day <= last:
                day_dir = workdir / day.strftime("%Y%m%d")
                result = client.export(ExportWindow.for_day(day), day_dir)
                for exported in result.files:
                    for line in iter_lines(exported.path):
                        out.write(line.data)
                        out.write(b"\n")
                        events += 1
                    exported.path.unlink(missing_ok=True)
                days += 1
                day += timedelta(days=1)
    return events, days


@router.get(
    "/export",
    name="export_amplitude_events",
    summary="Download Amplitude events of a range of days as a zipped NDJSON file",
    response_class=WorkDirFileResponse,
    status_code=200,
    responses={
        200: {
            "description": "`amplitude_<source>_<start>_<end>.zip` holding one NDJSON file "
            "(one raw Amplitude event per line)",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(*AUTH_ERRORS, 422, 502, 504),
    },
)
def export(
    settings: SettingsDep,
    api: ApiSettingsDep,
    start: DayParam,
    end: DayParam,
    source: Annotated[Literal["web", "mobile"], Query(description="Amplitude project")],
) -> WorkDirFileResponse:
    """Export `start`..`end` (UTC days, inclusive) hour 00 to 23 of each day; `curl -OJ` saves it.

    Days are downloaded one at a time through temporary files, so memory stays flat; the
    files are removed after the response, also when the client disconnects.
    """
    first, last = parse_day(start, "start"), parse_day(end, "end")
    if last < first:
        raise ApiError(422, f"end={end} is before start={start}", field="end")
    days = (last - first).days + 1
    if days > api.amplitude_max_days:
        raise ApiError(
            422,
            f"{days} days requested; the limit is API_AMPLITUDE_MAX_DAYS={api.amplitude_max_days}",
            field="end",
        )
    client = AmplitudeClient.from_settings(settings.amplitude, source)
    name = f"amplitude_{source}_{start}_{end}"
    started = time.monotonic()
    with work_dir(prefix="dwh-api-amplitude-") as workdir:
        target = workdir / f"{name}.zip"
        try:
            events, _ = write_ndjson_zip(client, first, last, workdir, target, f"{name}.json")
        except AmplitudeError as exc:
            log.warning("amplitude export %s failed: %s", name, type(exc).__name__)
            raise _upstream_error(exc, source) from None
        finally:
            client.close()
    log.info(
        "amplitude export %s: %d events over %d days, %d bytes zipped in %.2fs",
        name,
        events,
        days,
        target.stat().st_size,
        time.monotonic() - started,
    )
    return WorkDirFileResponse(
        target, workdir, filename=f"{name}.zip", media_type="application/zip"
    )
