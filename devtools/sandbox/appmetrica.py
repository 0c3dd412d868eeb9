"""A local AppMetrica Logs API that speaks the real wire protocol, with deterministic data.

`AppMetricaSandbox` serves `GET /logs/v1/export/<resource>.<csv|json>` and
`GET /management/v1/logsapi/status` on a `ThreadingHTTPServer` in a daemon
thread. Like the real API it checks `Authorization: OAuth <token>` (401
without it, 403 for a wrong token or an application the token cannot see),
answers 202 "Wait for result" / "Progress is N%" to the first `ready_after`
identical requests and 200 with the file afterwards, 429 when a 4th distinct
request would be queued for one application, 400 "Try to use more parts."
when a part holds more than `max_rows_per_part` rows, and gzips the body when
the client accepts it. Every value in a body is a string; `event_json` is a
JSON string inside it. The rows are generated from a seed (Cyrillic cities,
empty `ios_ifa` on Android, IPv6 addresses, quotes and commas in
`event_json`), so tests can ask the sandbox for the truth (`rows`,
`count_rows`, `body_bytes`).

Command line: `python -m devtools.sandbox appmetrica --port 8082` serves;
`... appmetrica --write-events FILE --rows 1000000 --fmt csv` writes a file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import random
import signal
import sys
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dwh_helper.sources.appmetrica import DATE_FORMAT, ExportRequest
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS

log = logging.getLogger(__name__)

DEMO_TOKEN = "demo-appmetrica-token"
MAX_QUEUED_PER_APPLICATION = 3
EXPORT_PREFIX = "/logs/v1/export/"
STATUS_PATH = "/management/v1/logsapi/status"
_BOM = "\ufeff"
_BATCH = 2000

# Which datetime field a window filters on, per resource and date_dimension.
_WINDOW_FIELD = {
    ("events", "default"): "event_datetime",
    ("events", "receive"): "event_receive_datetime",
    ("installations", "default"): "install_datetime",
    ("installations", "receive"): "install_receive_datetime",
    ("sessions_starts", "default"): "session_start_datetime",
    ("sessions_starts", "receive"): "session_start_receive_datetime",
}
# Rows a day holds, as a share of events_per_day.
_DAY_SHARE = {"events": 1, "installations": 20, "sessions_starts": 5}


@dataclass
class AppMetricaFaults:
    """Behaviour switches: how many 202s before 200, part size limit, 500s first, status."""

    ready_after: int = 2
    max_rows_per_part: int | None = None
    server_error_first: int = 0
    status_enabled: bool = True


@dataclass
class SandboxRequest:
    """One request the sandbox answered."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass
class _Job:
    application_id: str
    polls: int = 0
    ready: bool = False


# -- deterministic data --------------------------------------------------------

_CITIES = (
    ("Москва", "RU"),
    ("Санкт-Петербург", "RU"),
    ("Новосибирск", "RU"),
    ("Екатеринбург", "RU"),
    ("Казань", "RU"),
    ("Нижний Новгород", "RU"),
    ("Алматы", "KZ"),
    ("Минск", "BY"),
    ("", ""),
)
_OPERATORS = (
    ("250", "1", "MTS RUS"),
    ("250", "2", "MegaFon"),
    ("250", "99", "Beeline"),
    ("250", "20", "Tele2"),
    ("", "", ""),
)
_ANDROID = (
    ("Samsung", "Galaxy A52", "SM-A525F"),
    ("Xiaomi", "Redmi Note 12", "23021RAAEG"),
    ("Google", "Pixel 7", "GVU6C"),
    ("HUAWEI", "P30 lite", "MAR-LX1M"),
)
_APPLE = (
    ("Apple", "iPhone 13", "iPhone14,5"),
    ("Apple", "iPhone SE", "iPhone12,8"),
    ("Apple", "iPad Air", "iPad13,1"),
)
_EVENT_NAMES = (
    "app_open",
    "screen_view",
    "purchase_started",
    "purchase_completed",
    "Открыл экран записи",
    "push_received",
    "search",
)
_SCREENS = ("main", "checkout", "doctor_card", "Запись к врачу", "profile")
_CONNECTIONS = ("wifi", "cell", "unknown")


def _next_prime(number: int) -> int:
    candidate = max(2, number)
    while any(candidate % d == 0 for d in range(2, int(candidate**0.5) + 1)):
        candidate += 1
    return candidate


def _pool_size(events_per_day: int) -> int:
    return _next_prime(max(53, events_per_day // 86400 + 2))


def _stride(pool: int) -> int:
    return 31 if pool != 31 else 37


def _uuid_text(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


@lru_cache(maxsize=32)
def _devices(seed: int, application_id: str, size: int) -> tuple[dict[str, str], ...]:
    """The application's devices: ids, hardware, place and carrier, as Logs API strings."""
    rng = random.Random(f"{seed}:{application_id}:devices")
    devices = []
    for index in range(size):
        ios = rng.random() < 0.35
        manufacturer, model, original = rng.choice(_APPLE if ios else _ANDROID)
        city, country = rng.choice(_CITIES)
        mcc, mnc, operator = rng.choice(_OPERATORS)
        # One device id above 2**63 on purpose: AppMetrica device ids are unsigned 64-bit.
        device_id = (
            18_000_000_000_000_000_000 + index
            if index == 0
            else (rng.randrange(10**17, 9 * 10**18))
        )
        if rng.random() < 0.5:
            ipv6 = f"::ffff:{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # noqa: E501
        else:
            ipv6 = (
                f"2a02:6b8:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}"  # noqa: E501
            )
        devices.append(
            {
                "appmetrica_device_id": str(device_id),
                "installation_id": f"{rng.getrandbits(128):032x}",
                "os_name": "ios" if ios else "android",
                "os_version": rng.choice(("16.4", "17.2", "15.7"))
                if ios
                else rng.choice(("11", "12", "13", "14")),
                "device_manufacturer": manufacturer,
                "device_model": model,
                "original_device_model": original,
                "device_type": "tablet" if "iPad" in model else "phone",
                "google_aid": "" if ios else _uuid_text(rng),
                "oaid": "",
                "ios_ifa": (_uuid_text(rng) if rng.random() < 0.5 else "") if ios else "",
                "ios_ifv": _uuid_text(rng) if ios else "",
                "windows_aid": "",
                "city": city,
                "country_iso_code": country,
                "device_locale": rng.choice(("ru_RU", "ru_RU", "en_US", "kk_KZ")),
                "device_ipv6": ipv6,
                "mcc": mcc,
                "mnc": mnc,
                "operator_name": operator,
                "profile_id": str(rng.randrange(100000, 999999)) if rng.random() < 0.6 else "",
                "app_version_name": rng.choice(("5.4.2", "5.5.0", "5.6.1")),
                "app_build_number": rng.choice(("5421", "5500", "5610")),
                "app_package_name": "ru.example.app" if not ios else "ru.example.ios",
            }
        )
    return tuple(devices)


def _event_json(rng: random.Random, index: int) -> str:
    roll = rng.random()
    if roll < 0.08:
        return ""
    if roll < 0.2:
        return "{}"
    if roll < 0.55:
        value: Any = {"screen": rng.choice(_SCREENS), "items": rng.randrange(1, 9)}
    elif roll < 0.8:
        value = {
            "city": rng.choice(_CITIES)[0] or "Москва",
            "note": 'comma, "quoted" and\nnewline',
            "position": index % 100,
        }
    else:
        value = {
            "cart": {"sku": f"A-{rng.randrange(1000)}", "price": rng.randrange(100, 99999) / 100},
            "tags": ["promo", "новинка"],
            "first": rng.random() < 0.5,
        }
    return json.dumps(value, ensure_ascii=False)


def _fmt(moment: datetime) -> str:
    return moment.strftime(DATE_FORMAT)


def _day_rows(
    resource: str, seed: int, application_id: str, day: date, events_per_day: int
) -> Iterator[dict[str, str]]:
    """Every row of one UTC day, in time order, generated without holding the day in memory."""
    size = _pool_size(events_per_day)
    devices = _devices(seed, application_id, size)
    stride = _stride(size)
    count = max(1, events_per_day // _DAY_SHARE[resource])
    rng = random.Random(f"{seed}:{application_id}:{resource}:{day.isoformat()}")
    start = datetime.combine(day, time(0), tzinfo=UTC)
    epoch = int(start.timestamp())
    ordinal = day.toordinal()
    for index in range(count):
        second = index * 86400 // count
        timestamp = epoch + second
        device_index = (index * stride + (ordinal if resource == "installations" else 0)) % size
        device = devices[device_index]
        receive = timestamp + rng.randrange(0, 180)
        moment = datetime.fromtimestamp(timestamp, UTC)
        received = datetime.fromtimestamp(receive, UTC)
        row = dict(device)
        row["application_id"] = application_id
        row["connection_type"] = rng.choice(_CONNECTIONS)
        if resource == "events":
            row.update(
                event_datetime=_fmt(moment),
                event_json=_event_json(rng, index),
                event_name=rng.choice(_EVENT_NAMES),
                event_receive_datetime=_fmt(received),
                event_receive_timestamp=str(receive),
                event_timestamp=str(timestamp),
                session_id=str(
                    10_000_000_000 + ((ordinal * 2 + second // 43200) * size + device_index)
                ),
            )
        elif resource == "sessions_starts":
            row.update(
                session_id=str(20_000_000_000 + ordinal * count + index),
                session_start_datetime=_fmt(moment),
                session_start_receive_datetime=_fmt(received),
                session_start_receive_timestamp=str(receive),
                session_start_timestamp=str(timestamp),
            )
        else:
            organic = rng.random() < 0.4
            click = timestamp - rng.randrange(60, 7200)
            row.update(
                installation_id=f"{rng.getrandbits(128):032x}",
                attributed_touch_type="" if organic else "click",
                click_datetime="" if organic else _fmt(datetime.fromtimestamp(click, UTC)),
                click_id="" if organic else f"clk-{rng.getrandbits(48):x}",
                click_ipv6="" if organic else device["device_ipv6"],
                click_timestamp="" if organic else str(click),
                click_url_parameters="" if organic else "utm_source=yandex&utm_campaign=весна",
                click_user_agent="" if organic else "Mozilla/5.0 (Linux; Android 13)",
                publisher_id="" if organic else str(rng.choice((1, 30101, 2047))),
                publisher_name="" if organic else rng.choice(("Yandex.Direct", "VK Ads")),
                tracker_name="" if organic else "Весенняя кампания",
                tracking_id="" if organic else str(rng.randrange(10**17, 10**18)),
                install_datetime=_fmt(moment),
                install_ipv6=device["device_ipv6"],
                install_receive_datetime=_fmt(received),
                install_receive_timestamp=str(receive),
                install_timestamp=str(timestamp),
                is_reattribution="false",
                is_reinstallation="true" if rng.random() < 0.1 else "false",
                match_type="" if organic else rng.choice(("referrer", "fingerprint")),
                fingerprint_method="",
            )
        yield row


def generate_rows(
    resource: str,
    application_id: str,
    since: datetime,
    until: datetime,
    *,
    seed: int = 7,
    events_per_day: int = 500,
    date_dimension: str = "default",
    filters: dict[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Every generated row (all fields, as strings) whose window field is in [since, until]."""
    window_field = _WINDOW_FIELD[(resource, date_dimension)]
    low, high = _fmt(since), _fmt(until)
    day = since.date() - timedelta(days=1 if date_dimension == "receive" else 0)
    while day <= until.date():
        for row in _day_rows(resource, seed, application_id, day, events_per_day):
            if low <= row[window_field] <= high and (
                not filters or all(row.get(k) == v for k, v in filters.items())
            ):
                yield row
        day += timedelta(days=1)


def _select(rows: Iterable[dict[str, str]], fields: Sequence[str]) -> Iterator[dict[str, str]]:
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


def write_events_file(
    path: Path | str,
    fmt: str,
    rows: int,
    *,
    resource: str = "events",
    application_id: str = "1111",
    start: date = date(2024, 3, 1),
    events_per_day: int = 100_000,
    seed: int = 7,
    use_utf8_bom: bool = False,
    fields: Sequence[str] | None = None,
) -> int:
    """Write `rows` generated rows as a Logs API file, streamed; returns the bytes written.

    Days follow each other from `start`, `events_per_day` rows each (the last
    day cut short). The file is exactly what the sandbox would serve for that
    window with these settings.
    """
    chosen = tuple(fields or DEFAULT_FIELDS[resource])

    def limited() -> Iterator[dict[str, str]]:
        produced = 0
        day = start
        while produced < rows:
            for row in _day_rows(resource, seed, application_id, day, events_per_day):
                if produced >= rows:
                    return
                yield row
                produced += 1
            day += timedelta(days=1)

    written = 0
    with open(path, "wb") as handle:
        for chunk in iter_body(limited(), chosen, fmt, use_utf8_bom=use_utf8_bom):
            handle.write(chunk)
            written += len(chunk)
    return written


# -- the HTTP server -------------------------------------------------------------


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Export:
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
    raise _Reject(400, f"Parameter {name} must be true or false, got {value!r}")


def _parse_date(params: dict[str, str], name: str) -> datetime:
    value = params.get(name)
    if not value:
        raise _Reject(400, f"Parameter {name} is required")
    for pattern in (DATE_FORMAT, "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    raise _Reject(400, f"Parameter {name} has wrong format {value!r}, use yyyy-mm-dd hh:mm:ss")


def _parse_export(path: str, params: dict[str, str]) -> _Export:
    name = path[len(EXPORT_PREFIX) :]
    resource, _, fmt = name.rpartition(".")
    if resource not in DEFAULT_FIELDS:
        raise _Reject(400, f"Unknown resource {resource!r}")
    if fmt not in ("csv", "json"):
        raise _Reject(400, f"Unknown format {fmt!r}, use csv or json")
    application_id = params.get("application_id", "")
    if not application_id.isdigit():
        raise _Reject(400, "Parameter application_id is required and must be numeric")
    since, until = _parse_date(params, "date_since"), _parse_date(params, "date_until")
    if until < since:
        raise _Reject(400, "date_until must not be earlier than date_since")
    if not params.get("fields"):
        raise _Reject(400, "Parameter fields is required")
    fields = tuple(item.strip() for item in params["fields"].split(","))
    known = DEFAULT_FIELDS[resource]
    unknown = [item for item in fields if item not in known]
    if unknown:
        raise _Reject(400, f"Unknown fields for {resource}: {', '.join(unknown)}")
    dimension = params.get("date_dimension") or "default"
    if dimension not in ("default", "receive"):
        raise _Reject(400, f"Wrong date_dimension {dimension!r}, use default or receive")
    try:
        parts_count = int(params.get("parts_count") or 1)
        part_number = int(params.get("part_number") or 0)
    except ValueError:
        raise _Reject(400, "parts_count and part_number must be integers") from None
    if parts_count < 1 or not 0 <= part_number < parts_count:
        raise _Reject(400, f"Wrong part_number {part_number} for parts_count {parts_count}")
    limit = params.get("limit")
    _flag(params.get("skip_unavailable_shards"), "skip_unavailable_shards")
    return _Export(
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


class AppMetricaSandbox:
    """The Logs API stand-in: start(), url, stop(); also the truth about its generated data."""

    def __init__(
        self,
        token: str = DEMO_TOKEN,
        application_ids: Sequence[str] = ("1111",),
        *,
        seed: int = 7,
        events_per_day: int = 500,
        faults: AppMetricaFaults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.application_ids = tuple(str(item) for item in application_ids)
        self.seed = seed
        self.events_per_day = events_per_day
        self.faults = faults or AppMetricaFaults()
        self.host = host
        self.port = port
        self.requests: list[SandboxRequest] = []
        self.export_calls = 0
        self._jobs: dict[tuple[str, tuple[tuple[str, str], ...]], _Job] = {}
        self._errors_served = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8082` (valid after start())."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> AppMetricaSandbox:
        """Start serving in a daemon thread; `port` is the bound port afterwards."""
        handler = type("AppMetricaHandler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="appmetrica-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.info("AppMetrica sandbox on %s (applications %s)", self.url, self.application_ids)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AppMetricaSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the truth ------------------------------------------------------------------

    def rows(
        self,
        resource: str,
        application_id: str,
        since: datetime,
        until: datetime,
        fields: Sequence[str] | None = None,
        date_dimension: str = "default",
    ) -> list[dict[str, str]]:
        """The rows a window holds, as the API sends them (strings), only the given fields."""
        chosen = tuple(fields or DEFAULT_FIELDS[resource])
        generated = generate_rows(
            resource,
            str(application_id),
            since,
            until,
            seed=self.seed,
            events_per_day=self.events_per_day,
            date_dimension=date_dimension,
        )
        return list(_select(generated, chosen))

    def count_rows(
        self,
        resource: str,
        application_id: str,
        since: datetime,
        until: datetime,
        date_dimension: str = "default",
    ) -> int:
        """How many rows a window holds."""
        return sum(
            1
            for _ in generate_rows(
                resource,
                str(application_id),
                since,
                until,
                seed=self.seed,
                events_per_day=self.events_per_day,
                date_dimension=date_dimension,
            )
        )

    def body_bytes(
        self, request: ExportRequest, parts_count: int = 1, part_number: int = 0
    ) -> bytes:
        """Exactly the (uncompressed) body a 200 serves for this request and part."""
        export = _Export(
            resource=request.resource,
            fmt=request.fmt,
            application_id=request.application_id,
            since=request.since.replace(tzinfo=None, microsecond=0),
            until=request.until.replace(tzinfo=None, microsecond=0),
            fields=request.fields,
            date_dimension=request.date_dimension,
            use_utf8_bom=request.use_utf8_bom,
            parts_count=parts_count,
            part_number=part_number,
        )
        return b"".join(self._body(export))

    def pending_jobs(self, application_id: str) -> int:
        """How many distinct requests are queued (not ready yet) for an application."""
        with self._lock:
            return sum(
                1
                for job in self._jobs.values()
                if job.application_id == str(application_id) and not job.ready
            )

    # -- request handling -------------------------------------------------------------

    def _part_rows(self, export: _Export) -> Iterator[dict[str, str]]:
        rows = generate_rows(
            export.resource,
            export.application_id,
            export.since,
            export.until,
            seed=self.seed,
            events_per_day=self.events_per_day,
            date_dimension=export.date_dimension,
            filters=export.filters,
        )
        for index, row in enumerate(rows):
            if export.limit is not None and index >= export.limit:
                return
            if index % export.parts_count == export.part_number:
                yield row

    def _body(self, export: _Export) -> Iterator[bytes]:
        return iter_body(
            self._part_rows(export), export.fields, export.fmt, use_utf8_bom=export.use_utf8_bom
        )

    def _authorize(self, headers: dict[str, str], application_id: str | None) -> None:
        header = headers.get("authorization", "")
        if not header:
            raise _Reject(
                401, "Authorization required: send the header 'Authorization: OAuth <token>'"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "oauth" or token.strip() != self.token:
            raise _Reject(403, "Invalid oauth_token")
        if application_id is not None and application_id not in self.application_ids:
            raise _Reject(403, f"Access denied to application {application_id}")

    def _handle_export(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, str, _Export | None]:
        """(status, text body, export to stream when 200)."""
        self._authorize(headers, params.get("application_id") or None)
        export = _parse_export(path, params)
        with self._lock:
            if self._errors_served < self.faults.server_error_first:
                self._errors_served += 1
                raise _Reject(500, "Internal server error")
            key = (path, tuple(sorted(params.items())))
            job = self._jobs.get(key)
            if job is not None and job.ready and "no-cache" in headers.get("cache-control", ""):
                del self._jobs[key]
                job = None
            if job is None:
                limit = self.faults.max_rows_per_part
                if limit is not None and sum(1 for _ in self._part_rows(export)) > limit:
                    raise _Reject(
                        400,
                        "Result is too big for one file (more than "
                        f"{limit} rows in this part). Try to use more parts.",
                    )
                queued = sum(
                    1
                    for other in self._jobs.values()
                    if other.application_id == export.application_id and not other.ready
                )
                if queued >= MAX_QUEUED_PER_APPLICATION:
                    raise _Reject(
                        429,
                        f"There are already {MAX_QUEUED_PER_APPLICATION} enqueued queries for "
                        f"given application_id {export.application_id}. Please, wait for the "
                        "completion of some of them.",
                    )
                job = self._jobs[key] = _Job(export.application_id)
            if not job.ready:
                if job.polls < self.faults.ready_after:
                    job.polls += 1
                    if job.polls == 1:
                        return 202, "Wait for result", None
                    progress = 100 * (job.polls - 1) // self.faults.ready_after
                    return 202, f"Wait for result. Progress is {progress}%", None
                job.ready = True
        return 200, "", export

    def _record(self, request: SandboxRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if request.path.startswith(EXPORT_PREFIX):
                self.export_calls += 1


class _Handler(BaseHTTPRequestHandler):
    """One request to the sandbox (the class gets `sandbox` set by AppMetricaSandbox.start)."""

    sandbox: AppMetricaSandbox
    protocol_version = "HTTP/1.1"
    server_version = "AppMetricaSandbox/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("sandbox %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {key.lower(): value for key, value in self.headers.items()}
        record = SandboxRequest("GET", split.path, params, headers)
        self.sandbox._record(record)  # before answering: a client may look right after
        try:
            if split.path == STATUS_PATH:
                self.sandbox._authorize(headers, None)
                state = "enabled" if self.sandbox.faults.status_enabled else "disabled"
                record.status = 200
                self._send_text(
                    200, json.dumps({"logs_api_availability_status": state}), "application/json"
                )
            elif split.path.startswith(EXPORT_PREFIX):
                status, text, export = self.sandbox._handle_export(split.path, params, headers)
                record.status = status
                if export is None:
                    self._send_text(status, text)
                else:
                    self._send_file(export, "gzip" in headers.get("accept-encoding", ""))
            else:
                raise _Reject(404, f"No such endpoint {split.path}")
        except _Reject as reject:
            record.status = reject.status
            self._send_text(reject.status, reject.message)
        except (BrokenPipeError, ConnectionResetError):
            record.status = record.status or 499

    def _send_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, export: _Export, gzip_body: bool) -> None:
        content_type = "text/csv" if export.fmt == "csv" else "application/json"
        self.send_response(200)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        if gzip_body:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip_body else None
        for chunk in self.sandbox._body(export):
            self._chunk(compressor.compress(chunk) if compressor else chunk)
        if compressor is not None:
            self._chunk(compressor.flush())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


# -- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.sandbox appmetrica [...]`: serve the sandbox, or write a file."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox appmetrica",
        description="A local AppMetrica Logs API with generated data.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token", default=DEMO_TOKEN, help="the OAuth token clients must send")
    parser.add_argument(
        "--application-ids", default="1111", help="comma-separated application ids served"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--events-per-day",
        type=int,
        default=None,
        help="rows per day (default 500 when serving, 100000 with --write-events)",
    )
    parser.add_argument("--ready-after", type=int, default=2, help="202 answers before the 200")
    parser.add_argument("--max-rows-per-part", type=int, default=None)
    parser.add_argument("--server-error-first", type=int, default=0)
    parser.add_argument("--status-disabled", action="store_true")
    parser.add_argument("--write-events", metavar="FILE", help="write a file and exit")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for --write-events")
    parser.add_argument("--fmt", choices=("csv", "json"), default="csv")
    parser.add_argument("--resource", choices=tuple(DEFAULT_FIELDS), default="events")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--bom", action="store_true", help="start the file with a UTF-8 BOM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    application_ids = [item.strip() for item in args.application_ids.split(",") if item.strip()]

    if args.write_events:
        per_day = args.events_per_day or 100_000
        size = write_events_file(
            args.write_events,
            args.fmt,
            args.rows,
            resource=args.resource,
            application_id=application_ids[0],
            start=args.start,
            events_per_day=per_day,
            seed=args.seed,
            use_utf8_bom=args.bom,
        )
        print(f"wrote {args.rows} {args.resource} rows ({size} bytes) to {args.write_events}")
        return 0

    faults = AppMetricaFaults(
        ready_after=args.ready_after,
        max_rows_per_part=args.max_rows_per_part,
        server_error_first=args.server_error_first,
        status_enabled=not args.status_disabled,
    )
    sandbox = AppMetricaSandbox(
        args.token,
        application_ids,
        seed=args.seed,
        events_per_day=args.events_per_day or 500,
        faults=faults,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox:
        print(
            f"AppMetrica Logs API sandbox on {sandbox.url} — applications "
            f"{', '.join(application_ids)}; Ctrl-C to stop",
            flush=True,
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
