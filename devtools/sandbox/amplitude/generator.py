"""Deterministic, realistic Amplitude events: a pure function of (seed, project id, hour).

- `hour_event_count` — how many events an hour has (a daily curve with noise;
  a few hours have none).
- `iter_hour` / `generate_hour` — the events of one hour, ordered by
  `server_upload_time` (which is what the Export API's window filters on).
- `write_day_archive` — a realistic export archive of one UTC day, written as a stream.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.sandbox.amplitude.population import (
    CITIES,
    DEVICES_PER_PROJECT,
    pools,
    stable_int,
)
from devtools.sandbox.amplitude.protocol import write_archive

if TYPE_CHECKING:
    from dwh_helper.sources.amplitude import ExportWindow

HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Relative activity per UTC hour (Moscow is UTC+3: quiet from 21 to 03 UTC), mean 1.
_SHAPE_RAW = [
    0.35, 0.3, 0.35, 0.5, 0.8, 1.1, 1.3, 1.45, 1.55, 1.6, 1.6, 1.55,
    1.5, 1.45, 1.4, 1.4, 1.35, 1.3, 1.2, 1.0, 0.8, 0.6, 0.45, 0.4,
]  # fmt: skip
_SHAPE = [value * 24 / sum(_SHAPE_RAW) for value in _SHAPE_RAW]


def iter_window_hours(window: ExportWindow) -> Iterator[datetime]:
    """The start of every hour of an export window, in order."""
    current = window.start
    while current <= window.end:
        yield current
        current += HOUR


def hour_event_count(project_id: int, hour: datetime, seed: int, events_per_hour: int) -> int:
    """How many events the hour has: `events_per_hour` shaped by time of day, ±25 %, some 0."""
    if events_per_hour <= 0:
        return 0
    rng = random.Random(stable_int("count", seed, project_id, f"{hour:%Y%m%d%H}"))
    if rng.random() < 0.04:
        return 0
    return max(0, round(events_per_hour * _SHAPE[hour.hour] * rng.uniform(0.75, 1.25)))


def day_event_counts(
    project_id: int, day: date, seed: int, events_per_hour: int, total_events: int | None = None
) -> list[int]:
    """Events per hour of a UTC day; with `total_events`, exactly that many in all."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if total_events is None:
        return [
            hour_event_count(project_id, start + index * HOUR, seed, events_per_hour)
            for index in range(24)
        ]
    exact = [total_events * weight / 24 for weight in _SHAPE]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(24), key=lambda index: exact[index] - counts[index], reverse=True)
    for index in by_remainder[: total_events - sum(counts)]:
        counts[index] += 1
    return counts


_EVENT_TYPES = [
    ("screen_view", 30),
    ("session_start", 8),
    ("session_end", 6),
    ("appointment_search", 10),
    ("appointment_booked", 5),
    ("appointment_cancelled", 2),
    ("telemed_message_sent", 6),
    ("telemed_file_sent", 3),
    ("login", 4),
    ("push_opened", 5),
    ("$identify", 6),
    ("Открыт экран оплаты", 3),
    ("purchase_started", 2),
]
_SCREENS = [
    "Главная",
    "Запись к врачу",
    "Мои записи",
    "Профиль",
    "Чат с врачом",
    "main",
    "settings",
]
_CLINICS = [
    (101, "Клиника на Невском", "Санкт-Петербург"),
    (102, "МедЦентр «Здоровье»", "Москва"),
    (103, "Clinic #3", "Казань"),
]
_SPECIALTIES = ["терапевт", "педиатр", "кардиолог", "невролог", "dentist", "ЛОР"]


def _picker(random_: Callable[[], float]) -> Callable[[list[Any]], Any]:
    """`random.choice` on a plain float draw (5x faster than `Random.choice`)."""

    def pick(items: list[Any]) -> Any:
        return items[int(random_() * len(items))]

    return pick


def _between(random_: Callable[[], float]) -> Callable[[int, int], int]:
    """An int in [low, high) from a plain float draw (faster than `Random.randrange`)."""

    def between(low: int, high: int) -> int:
        return low + int(random_() * (high - low))

    return between


def _event_properties(
    random_: Callable[[], float],
    pick: Callable[[list[Any]], Any],
    between: Callable[[int, int], int],
    event_type: str,
) -> dict[str, Any]:
    if event_type == "screen_view":
        return {"screen": pick(_SCREENS), "previous": pick(_SCREENS), "items": 3}
    if event_type in ("appointment_booked", "appointment_search", "appointment_cancelled"):
        clinic_id, name, city = pick(_CLINICS)
        props: dict[str, Any] = {
            "clinic": {"id": clinic_id, "name": name, "address": {"city": city}},
            "specialty": pick(_SPECIALTIES),
            "price": round(500 + random_() * 4000, 2),
            "slots": [f"{9 + index}:00" for index in range(between(0, 4))],
        }
        if random_() < 0.3:
            props["comment"] = "Пациент просит перезвонить 📞"
        return props
    if event_type.startswith("telemed"):
        return {
            "chat_id": between(1, 10**6),
            "attachments": between(0, 3),
            "is_doctor": False,
        }
    if event_type == "login":
        return {"method": pick(["sms", "gosuslugi", "password"]), "success": random_() < 0.9}
    if event_type == "push_opened":
        return {"campaign": pick(["Напоминание о приёме", "promo_march", None])}
    if event_type == "Открыт экран оплаты":
        return {"сумма": between(100, 9000), "валюта": "RUB"}
    return {}


_MINUTE_SECONDS = [f"{second // 60:02d}:{second % 60:02d}" for second in range(3600)]


def _timestamp_formatter(hour: datetime) -> Callable[[int, bool], str]:
    """Format epoch microseconds like Amplitude, fast for instants inside `hour`."""
    base = (hour - _EPOCH) // timedelta(microseconds=1)
    prefix = f"{hour:%Y-%m-%d %H}:"

    minute_seconds = [prefix + text for text in _MINUTE_SECONDS]

    def format_us(epoch_us: int, fraction: bool) -> str:
        offset = epoch_us - base
        if 0 <= offset < 3_600_000_000:
            seconds, micros = divmod(offset, 1_000_000)
            text = minute_seconds[seconds]
        else:
            moment = _EPOCH + timedelta(microseconds=epoch_us)
            micros = moment.microsecond
            text = f"{moment:%Y-%m-%d %H:%M:%S}"
        return f"{text}.{micros:06d}" if fraction else text

    return format_us


def _uuid_prefix(*parts: object) -> str:
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).hexdigest()
    variant = "89ab"[int(digest[16], 16) & 3]
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:24]}"


def iter_hour(project_id: int, hour: datetime, seed: int, count: int) -> Iterator[dict[str, Any]]:
    """The `count` events uploaded during `hour`, in `server_upload_time` order (streamed)."""
    if count <= 0:
        return
    hour = hour.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    devices, users = pools(project_id, seed)
    rng = random.Random(stable_int("events", seed, project_id, f"{hour:%Y%m%d%H}"))
    random_ = rng.random
    between = _between(random_)
    choice = _picker(random_)
    fmt = _timestamp_formatter(hour)
    base_us = (hour - _EPOCH) // timedelta(microseconds=1)
    uuid_prefix = _uuid_prefix("uuid", seed, project_id, f"{hour:%Y%m%d%H}")
    insert_prefix = _uuid_prefix("insert", seed, project_id, f"{hour:%Y%m%d%H}")
    day_number = (hour - _EPOCH).days
    event_types = [name for name, weight in _EVENT_TYPES for _ in range(weight)]
    # uuid / $insert_id: a (seed, project, hour) hash prefix + the index scrambled by an odd
    # multiplier (a bijection mod 2**32), so they are unique and look random.
    day_properties: dict[int, dict[str, Any]] = {}
    offsets = sorted(between(0, 3_600_000_000) for _ in range(count))

    for index, offset in enumerate(offsets):
        upload = base_us + offset
        roll = random_()
        if roll < 0.9:
            delay = between(5_000, 3_000_000)
        elif roll < 0.98:
            delay = between(3_000_000, 1_800_000_000)
        else:
            delay = between(1_800_000_000, 3 * 86_400_000_000)  # offline, sent days later
        event_time = upload - delay
        fraction = random_() >= 0.05
        event_time_text = fmt(event_time, fraction)
        device = devices[between(0, DEVICES_PER_PROJECT)] if random_() >= 0.02 else None
        user = device.user if device is not None else choice(users)
        event_type = choice(event_types)
        city = device.city if device is not None else CITIES[-1]

        if user is not None and random_() < 0.92:
            user_id: str | None = str(user.ehr_id)
            todays = day_properties.get(user.ehr_id)
            if todays is None:
                todays = dict(user.properties)
                for name, value in user.counters.items():
                    todays[name] = value + day_number % 17
                day_properties[user.ehr_id] = todays
            properties = dict(todays)
            if random_() < 0.05:
                properties["push_permission"] = choice(["granted", "not_granted"])
            if random_() < 0.01:
                properties.update(choice(_REJECTED_VALUES))
        else:
            user_id = choice(_NO_USER_IDS)
            properties = {"EHR_ID": choice(_NO_EHR_IDS), "Authorized": "false"}
            if random_() < 0.5:
                properties["app_city"] = choice(["SPB", "Moscow"])
            if random_() < 0.01:
                properties.update(choice(_REJECTED_VALUES))

        session_roll = random_()
        session_id = -1 if session_roll < 0.05 else (event_time // 1000) - between(0, 1_800_000)
        attribution_roll = random_()
        event = {
            "$insert_id": f"{insert_prefix}{index * 0x2545F491 & 0xFFFFFFFF:08x}",
            "$insert_key": f"{device.key}#{between(1, 999)}"
            if device and random_() < 0.8
            else None,
            "$schema": 13,
            "adid": device.adid if device else None,
            "amplitude_attribution_ids": (
                None
                if attribution_roll < 0.85
                else [f"{between(0, 1 << 40):010x}"]
                if attribution_roll < 0.95
                else f"{between(0, 1 << 40):010x}"
            ),
            "amplitude_event_type": None,
            "amplitude_id": device.amplitude_id if device else 500_000_000_000 + between(0, 10**9),
            "app": project_id,
            "city": city[0],
            "client_event_time": event_time_text,
            "client_upload_time": fmt(upload - between(1_000, 900_000), fraction),
            "country": city[2],
            "data": (
                {"group_ids": {}, "group_first_event": {}}
                if random_() < 0.8
                else {"path": "/2/httpapi", "user_properties_updated": True, "group_ids": {}}
            ),
            "data_type": "identify" if event_type == "$identify" else "event",
            "device_brand": device.brand if device else None,
            "device_carrier": device.carrier if device else None,
            "device_family": device.family if device else None,
            "device_id": device.device_id if device else None,
            "device_manufacturer": device.manufacturer if device else None,
            "device_model": device.model if device else None,
            "device_type": device.type if device else None,
            "dma": None,
            "event_id": between(1, 2000),
            "event_properties": _event_properties(random_, choice, between, event_type),
            "event_time": event_time_text,
            "event_type": event_type,
            "global_user_properties": {},
            "group_properties": {} if random_() < 0.9 else {"company": {"tier": "premium"}},
            "groups": {} if random_() < 0.9 else {"company": ["Клиника на Невском"]},
            "idfa": device.idfa if device else None,
            "ip_address": device.ip if device else None,
            "is_attribution_event": None if random_() < 0.3 else random_() < 0.05,
            "language": device.language if device else None,
            "library": device.library if device else "http/2.0",
            "location_lat": device.lat if device else None,
            "location_lng": device.lng if device else None,
            "os_name": device.os_name if device else None,
            "os_version": device.os_version if device else None,
            "partner_id": None,
            "paying": None if random_() < 0.8 else random_() < 0.25,
            "plan": {} if random_() < 0.7 else {"branch": "main", "source": "app", "version": "3"},
            "platform": device.platform if device else None,
            "processed_time": fmt(upload + between(500_000, 4_000_000), True),
            "region": city[1],
            "sample_rate": None,
            "server_received_time": fmt(upload - between(1_000, 5_000), fraction),
            "server_upload_time": fmt(upload, fraction),
            "session_id": session_id,
            "source_id": None,
            "start_version": device.start_version if device else None,
            "user_creation_time": user.created if user is not None else None,
            "user_id": user_id,
            "user_properties": properties,
            "uuid": f"{uuid_prefix}{index * 0x9E3779B1 & 0xFFFFFFFF:08x}",
            "version_name": device.version_name if device else None,
        }
        yield event


_NO_USER_IDS: list[str | None] = [None, None, None, "", "N/A", "-1"]
_NO_EHR_IDS: list[str | None] = [None, "N/A", "no ehr", "no_ehr", "null", ""]
#: Values the user-properties mapping must reject (about 1 % of events carry one).
_REJECTED_VALUES: list[dict[str, Any]] = [
    {"Age": "unknown age"},
    {"push_permission": "maybe"},
    {"authorization_status": "sometimes"},
    {"cohort_day": "first"},
    {"registered_via_app": "by fax"},
    {"telemed_files_sent": "many"},
]


def generate_hour(project_id: int, hour: datetime, seed: int, count: int) -> list[dict[str, Any]]:
    """The `count` events uploaded during `hour` (see `iter_hour`), as a list."""
    return list(iter_hour(project_id, hour, seed, count))


def write_day_archive(
    path: Path,
    project_id: int,
    day: date,
    seed: int,
    events_per_hour: int,
    *,
    total_events: int | None = None,
    events_per_part: int = 25_000,
) -> int:
    """Write a realistic export archive of one UTC day straight to `path`; returns the event count.

    `total_events` (instead of `events_per_hour`) fixes the day's exact total,
    spread over the hours by the daily curve. Memory stays flat: events are
    generated, encoded and compressed in batches.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    counts = day_event_counts(project_id, day, seed, events_per_hour, total_events)
    hours = (
        (start + index * HOUR, iter_hour(project_id, start + index * HOUR, seed, count))
        for index, count in enumerate(counts)
    )
    with open(path, "wb") as handle:
        return write_archive(handle, project_id, hours, events_per_part=events_per_part)
