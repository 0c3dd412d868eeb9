"""Deterministic AppMetrica Logs API rows: a pure function of (seed, application, day).

The rows carry what makes real exports awkward: Cyrillic cities, empty `ios_ifa` on
Android, IPv6 addresses, a device id above 2**63, quotes, commas and newlines inside
`event_json`. `generate_rows` yields a window's rows as strings; `write_events_file` writes
a whole Logs API file (for benchmarks) exactly as the server would serve it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from devtools.sandbox.appmetrica.protocol import iter_body
from dwh_helper.sources.appmetrica import DATE_FORMAT
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS

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


def day_rows(
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
        for row in day_rows(resource, seed, application_id, day, events_per_day):
            if low <= row[window_field] <= high and (
                not filters or all(row.get(k) == v for k, v in filters.items())
            ):
                yield row
        day += timedelta(days=1)


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
            for row in day_rows(resource, seed, application_id, day, events_per_day):
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
