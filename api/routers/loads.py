"""`/loads`: the load journal (load_log) and a per-day completeness summary, JSON and HTML."""

from __future__ import annotations

import html
import logging
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from api.deps import RepoDep, require_read
from api.errors import AUTH_ERRORS, ApiError, error_responses
from dwh_helper.dwh.load_log import day_summary, list_attempts

log = logging.getLogger(__name__)

router = APIRouter(prefix="/loads", tags=["loads"], dependencies=[Depends(require_read)])

Status = Literal["running", "loaded", "already loaded", "failed", "abandoned"]
SUMMARY_DAYS = 30


@router.get("", responses=error_responses(*AUTH_ERRORS, 422, 503))
def list_loads(
    repo: RepoDep,
    source: Annotated[str | None, Query(max_length=100, description="`amplitude`, ...")] = None,
    day: Annotated[
        date | None, Query(description="The export window's day (else the load's start day)")
    ] = None,
    key: Annotated[str | None, Query(max_length=1024, description="The S3 key")] = None,
    status: Annotated[Status | None, Query(description="Only attempts in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Attempts per page")] = 100,
    offset: Annotated[int, Query(ge=0, description="Attempts to skip (pagination)")] = 0,
) -> dict[str, Any]:
    """The load journal, newest first: one row per attempt to load a raw file, with its status,
    counts, object size/SHA-256, verification, duration, error and details."""
    with repo.connection() as conn:
        rows, total = list_attempts(
            conn, source=source, day=day, s3_key=key, status=status, limit=limit, offset=offset
        )
    following = offset + len(rows)
    return {
        "loads": rows,
        "count": len(rows),
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": following if following < total else None,
    }


def _summary(
    repo: RepoDep, source: str | None, since: date | None, until: date | None
) -> list[dict[str, Any]]:
    if since is not None and until is not None and since > until:
        raise ApiError(422, f"since ({since}) is after until ({until})", field="since")
    if since is None and until is None:
        since = date.today() - timedelta(days=SUMMARY_DAYS - 1)
    with repo.connection() as conn:
        return day_summary(conn, source=source, since=since, until=until)


SourceQuery = Annotated[str | None, Query(max_length=100, description="Only this source")]
SinceQuery = Annotated[
    date | None, Query(description=f"First day (default: the last {SUMMARY_DAYS} days)")
]
UntilQuery = Annotated[date | None, Query(description="Last day")]


@router.get("/summary", responses=error_responses(*AUTH_ERRORS, 422, 503))
def loads_summary(
    repo: RepoDep,
    source: SourceQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> dict[str, Any]:
    """Is a day complete? Per source and day: files, rows read / inserted / rejected / values
    nulled (each file's latest attempt), the last load time and a status (`complete` when
    every file's latest attempt loaded; else `failed`, `running` or `incomplete`)."""
    return {"days": _summary(repo, source, since, until)}


_STATUS_COLOURS = {
    "complete": "#2e7d32",
    "running": "#1565c0",
    "failed": "#c62828",
    "incomplete": "#ef6c00",
}


def render_summary(days: list[dict[str, Any]]) -> str:
    """The summary as a small HTML page: a table with one bar per source and day."""
    widest = max((int(day["rows_read"] or 0) for day in days), default=0) or 1
    lines = []
    for day in days:
        read = int(day["rows_read"] or 0)
        inserted = int(day["rows_inserted"] or 0)
        rejected = int(day["rows_rejected"] or 0)
        colour = _STATUS_COLOURS.get(day["status"], "#555")
        width = round(100 * read / widest, 1)
        bar = (
            f'<div class="bar" title="{read} rows read" style="width:{width}%;'
            f'background:{colour}"></div>'
        )
        last = day["last_load_at"].isoformat(sep=" ", timespec="seconds")
        lines.append(
            "<tr>"
            f"<td>{html.escape(str(day['day']))}</td><td>{html.escape(day['source'])}</td>"
            f'<td class="status" style="color:{colour}">{html.escape(day["status"])}</td>'
            f'<td class="n">{day["files"]}</td><td class="n">{read}</td>'
            f'<td class="n">{inserted}</td><td class="n">{rejected}</td>'
            f'<td class="n">{int(day["values_nulled"] or 0)}</td>'
            f'<td>{html.escape(last)}</td><td class="chart">{bar}</td></tr>'
        )
    body = "\n".join(lines) or '<tr><td colspan="10">No loads in this period.</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DWH Helper — loads per day</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.chart {{ width: 30%; }}
.bar {{ height: 14px; min-width: 1px; }}
</style></head><body>
<h1>Loads per day</h1>
<p>Each file counts once (its latest attempt). A day is <b>complete</b> when every file of it
loaded; the bar is the rows read, scaled to the busiest day, coloured by status.</p>
<table>
<thead><tr><th>Day</th><th>Source</th><th>Status</th><th>Files</th><th>Rows read</th>
<th>Inserted</th><th>Rejected</th><th>Nulled</th><th>Last load (UTC)</th><th>Rows read</th></tr>
</thead>
<tbody>
{body}
</tbody></table></body></html>
"""


@router.get(
    "/summary.html",
    response_class=HTMLResponse,
    responses=error_responses(*AUTH_ERRORS, 422, 503),
)
def loads_summary_page(
    repo: RepoDep,
    source: SourceQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> HTMLResponse:
    """The per-day summary as an HTML page with a bar per source and day (no JavaScript)."""
    return HTMLResponse(render_summary(_summary(repo, source, since, until)))
