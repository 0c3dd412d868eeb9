"""The AppMetrica Logs API's wire rules without sockets: paths, parameters, errors, bodies.

`parse_export` checks an export request's path and parameters as the real API does (400
with its message otherwise), `authorize` the OAuth header, and `iter_body` writes the rows
as the file a 200 carries: CSV with a header, or `{"data":[...]}`, every value a string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dwh_helper.sources.appmetrica import DATE_FORMAT
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS

MAX_QUEUED_PER_APPLICATION = 3
EXPORT_PREFIX = "/logs/v1/export/"
STATUS_PATH = "/management/v1/logsapi/status"
_BOM = "\ufeff"
_BATCH = 2000


class Reject(Exception):
    """An answer other than 200/202: its status and the text the API sends."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Export:
    """One checked export request: what to generate and how to write it."""

    resource: str
    fmt: str
    application_id: str
    since: datetime
    until: datetime
    fields: tuple[str, ...]
    date_dimension: str
    use_utf8_bom: bool
    parts_count: int
    part_number: int
    filters: dict[str, str] = field(default_factory=dict)
    limit: int | None = None


def _flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise Reject(400, f"Parameter {name} must be true or false, got {value!r}")


def _parse_date(params: dict[str, str], name: str) -> datetime:
    value = params.get(name)
    if not value:
        raise Reject(400, f"Parameter {name} is required")
    for pattern in (DATE_FORMAT, "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    raise Reject(400, f"Parameter {name} has wrong format {value!r}, use yyyy-mm-dd hh:mm:ss")


def parse_export(path: str, params: dict[str, str]) -> Export:
    """The export a request asks for; `Reject(400, ...)` naming the bad parameter."""
    name = path[len(EXPORT_PREFIX) :]
    resource, _, fmt = name.rpartition(".")
    if resource not in DEFAULT_FIELDS:
        raise Reject(400, f"Unknown resource {resource!r}")
    if fmt not in ("csv", "json"):
        raise Reject(400, f"Unknown format {fmt!r}, use csv or json")
    application_id = params.get("application_id", "")
    if not application_id.isdigit():
        raise Reject(400, "Parameter application_id is required and must be numeric")
    since, until = _parse_date(params, "date_since"), _parse_date(params, "date_until")
    if until < since:
        raise Reject(400, "date_until must not be earlier than date_since")
    if not params.get("fields"):
        raise Reject(400, "Parameter fields is required")
    fields = tuple(item.strip() for item in params["fields"].split(","))
    known = DEFAULT_FIELDS[resource]
    unknown = [item for item in fields if item not in known]
    if unknown:
        raise Reject(400, f"Unknown fields for {resource}: {', '.join(unknown)}")
    dimension = params.get("date_dimension") or "default"
    if dimension not in ("default", "receive"):
        raise Reject(400, f"Wrong date_dimension {dimension!r}, use default or receive")
    try:
        parts_count = int(params.get("parts_count") or 1)
        part_number = int(params.get("part_number") or 0)
    except ValueError:
        raise Reject(400, "parts_count and part_number must be integers") from None
    if parts_count < 1 or not 0 <= part_number < parts_count:
        raise Reject(400, f"Wrong part_number {part_number} for parts_count {parts_count}")
    limit = params.get("limit")
    _flag(params.get("skip_unavailable_shards"), "skip_unavailable_shards")
    return Export(
        resource=resource,
        fmt=fmt,
        application_id=application_id,
        since=since,
        until=until,
        fields=fields,
        date_dimension=dimension,
        use_utf8_bom=_flag(params.get("use_utf8_bom"), "use_utf8_bom"),
        parts_count=parts_count,
        part_number=part_number,
        filters={key: value for key, value in params.items() if key in known},
        limit=int(limit) if limit and limit.isdigit() else None,
    )


def authorize(
    headers: dict[str, str],
    token: str,
    application_ids: Sequence[str],
    application_id: str | None,
) -> None:
    """Raise `Reject` (401/403) unless the headers carry `OAuth <token>` for the application."""
    header = headers.get("authorization", "")
    if not header:
        raise Reject(401, "Authorization required: send the header 'Authorization: OAuth <token>'")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "oauth" or given.strip() != token:
        raise Reject(403, "Invalid oauth_token")
    if application_id is not None and application_id not in application_ids:
        raise Reject(403, f"Access denied to application {application_id}")


def select_fields(
    rows: Iterable[dict[str, str]], fields: Sequence[str]
) -> Iterator[dict[str, str]]:
    """Each row cut down to `fields`, in that order (missing ones empty)."""
    for row in rows:
        yield {name: row.get(name, "") for name in fields}


def iter_body(
    rows: Iterable[dict[str, str]], fields: Sequence[str], fmt: str, *, use_utf8_bom: bool = False
) -> Iterator[bytes]:
    """The bytes of a Logs API file for these rows (CSV with a header, or `{"data":[...]}`)."""
    prefix = _BOM if use_utf8_bom else ""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        buffer.write(prefix)
        writer.writerow(fields)
        pending = 0
        for row in rows:
            writer.writerow([row.get(name, "") for name in fields])
            pending += 1
            if pending >= _BATCH:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        yield buffer.getvalue().encode()
        return
    if fmt != "json":
        raise ValueError(f"unsupported format {fmt!r}; use 'csv' or 'json'")
    parts: list[str] = [prefix + '{"data":[']
    first = True
    for row in rows:
        item = json.dumps({name: row.get(name, "") for name in fields}, ensure_ascii=False)
        parts.append(item if first else "," + item)
        first = False
        if len(parts) >= _BATCH:
            yield "".join(parts).encode()
            parts = []
    parts.append("]}")
    yield "".join(parts).encode()
