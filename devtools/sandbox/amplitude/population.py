"""The devices and users of a sandbox Amplitude project: fixed pools, a function of the seed.

Events draw from these pools, so a device keeps its model, place and carrier across events
and a user keeps its properties (a few of which change over time, as in real exports).
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

DEVICES_PER_PROJECT = 2000
USERS_PER_PROJECT = 1200


def stable_int(*parts: object) -> int:
    """A 64-bit integer that depends only on `parts` (unlike `hash`, stable across runs)."""
    text = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


CITIES: list[tuple[str | None, str | None, str | None, float, float]] = [
    ("Москва", "Москва", "Russia", 55.7558, 37.6173),
    ("Moscow", "Moscow", "Russia", 55.7558, 37.6173),
    ("Санкт-Петербург", "Санкт-Петербург", "Russia", 59.9343, 30.3351),
    ("Saint Petersburg", "St.-Petersburg", "Russia", 59.9343, 30.3351),
    ("Казань", "Татарстан", "Russia", 55.7961, 49.1064),
    ("Новосибирск", "Новосибирская область", "Russia", 55.0084, 82.9357),
    ("Екатеринбург", "Свердловская область", "Russia", 56.8389, 60.6057),
    ("Almaty", "Almaty", "Kazakhstan", 43.2389, 76.8897),
    ("Минск", "Минск", "Belarus", 53.9045, 27.5615),
    (None, None, "Russia", 61.524, 105.3188),
]
_ANDROID = [
    ("samsung", "Samsung Phone", "samsung", "SM-A525F", "Samsung Galaxy A52"),
    ("samsung", "Samsung Phone", "samsung", "SM-G991B", "Samsung Galaxy S21"),
    ("Xiaomi", "Xiaomi Phone", "Xiaomi", "2201117TY", "Redmi Note 11"),
    ("HONOR", "Honor Phone", "HONOR", "ANY-NX1", "Honor X8"),
    ("google", "Google Phone", "Google", "Pixel 7", "Google Pixel 7"),
    ("realme", None, "realme", "RMX3630", None),
]
_IOS = [
    ("Apple", "Apple iPhone", "Apple", "iPhone14,5", "Apple iPhone 13"),
    ("Apple", "Apple iPhone", "Apple", "iPhone15,2", "Apple iPhone 14 Pro"),
    ("Apple", "Apple iPhone", "Apple", "iPhone12,8", "Apple iPhone SE (2nd generation)"),
    ("Apple", "Apple iPad", "Apple", "iPad13,1", "Apple iPad Air (4th generation)"),
]
_WEB = [("Chrome", "120"), ("Safari", "17.1"), ("Yandex Browser", "23.11"), ("Firefox", "121")]
_CARRIERS = ["MTS", "Beeline", "MegaFon", "Tele2", "Yota", "Tinkoff Mobile", None]
_LANGUAGES = ["Russian", "Russian", "Russian", "English", "ru-RU", "Kazakh"]
_VERSIONS = ["5.1.0", "5.2.3", "5.3.0", "5.4.2", "5.5.0"]
_SOURCES = ["organic", "yandex_direct", "google_ads", "vk_ads", "referral", "N/A", None]


class _Device:
    """A device of the project's pool (fixed attributes across events)."""

    __slots__ = (
        "device_id", "platform", "os_name", "os_version", "brand", "carrier", "family",
        "manufacturer", "model", "type", "library", "amplitude_id", "idfa", "adid", "language",
        "start_version", "version_name", "user", "city", "lat", "lng", "ip", "key",
    )  # fmt: skip


class _User:
    """A person (EHR id) of the project's pool with their base user properties."""

    __slots__ = ("ehr_id", "created", "properties", "counters")


def _uuid_from(rng: random.Random, upper: bool = False) -> str:
    text = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(text[16], 16) & 3]
    text = f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}"
    return text.upper() if upper else text


def _ip(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.62:
        first = rng.choice([95, 178, 188, 46, 77, 217])
        return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    groups = ":".join(f"{rng.randrange(65536):x}" for _ in range(4))
    return f"2a02:{rng.randrange(0x2000, 0x2FFF):x}:{groups}::{rng.randrange(1, 0xFFFF):x}"


def _user_properties(rng: random.Random, ehr_id: int) -> tuple[dict[str, Any], dict[str, int]]:
    props: dict[str, Any] = {"EHR_ID": str(ehr_id) if rng.random() < 0.95 else ehr_id}
    gender = rng.choice(["Female", "Male", "female", "male", "N/A"])
    props["Gender" if rng.random() < 0.7 else "gender"] = gender
    years = rng.randrange(18, 80)
    word = (
        "год" if years % 10 == 1 and years != 11 else "года" if years % 10 in (2, 3, 4) else "лет"
    )
    age_roll = rng.random()
    if age_roll < 0.6:
        props["Age"] = f"{years} {word}"
    elif age_roll < 0.8:
        props["age"] = str(years)
    elif age_roll < 0.9:
        props["age"] = years
    if rng.random() < 0.7:
        props["Notifications state"] = rng.choice(["Enabled", "Disabled"])
    if rng.random() < 0.6:
        props["push_permission"] = rng.choice(["granted", "not_granted", "unknown", 1, "0"])
    if rng.random() < 0.5:
        props["location_permission"] = rng.choice(["granted", "not_granted", "N/A"])
    props["Authorized"] = rng.choice(["true", "True", "1", "false"])
    if rng.random() < 0.5:
        props["authorization_status"] = rng.choice(["authorized", "not_authorized", "unauthorized"])
    props["app_city"] = rng.choice(["SPB", "Moscow", "SPB", "Moscow", "N/A"])
    cohort = rng.randrange(0, 400)
    props["cohort_day"] = cohort
    props["cohort_week"] = cohort // 7
    props["cohort_month"] = cohort // 30
    props["registered_via_app"] = rng.choice(["via app", "1", 1, "0", 0, "unknown", "N/A"])
    source = rng.choice(_SOURCES)
    if source is not None:
        props["source"] = source
    if rng.random() < 0.3:
        props["Ehr Count"] = rng.randrange(1, 4)
    if rng.random() < 0.3:
        props["google_pay_available"] = rng.random() < 0.5
    counters = {
        name: rng.randrange(0, 30)
        for name in (
            "telemed_files_sent",
            "appointments_cancelled",
            "telemed_files_received",
            "telemed_messages_received",
            "telemed_messages_sent",
            "telemed_consultations_resumed",
            "appointments_booked",
        )  # fmt: skip
        if rng.random() < 0.7
    }
    return props, counters


@lru_cache(maxsize=16)
def pools(project_id: int, seed: int) -> tuple[list[_Device], list[_User]]:
    rng = random.Random(stable_int("pools", seed, project_id))
    users: list[_User] = []
    for index in range(USERS_PER_PROJECT):
        user = _User()
        user.ehr_id = 100_000 + project_id % 1000 * 10_000 + index * 7 + rng.randrange(7)
        created = datetime(2022, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(2 * 365 * 86400), microseconds=rng.randrange(1_000_000)
        )
        user.created = created.strftime("%Y-%m-%d %H:%M:%S.%f")
        user.properties, user.counters = _user_properties(rng, user.ehr_id)
        users.append(user)
    devices: list[_Device] = []
    for _ in range(DEVICES_PER_PROJECT):
        device = _Device()
        roll = rng.random()
        if roll < 0.5:
            brand, family, manufacturer, model, kind = rng.choice(_ANDROID)
            device.device_id = _uuid_from(rng) + "R"
            device.platform, device.os_name = "Android", "android"
            device.os_version = rng.choice(["10", "11", "12", "13", "14"])
            device.library = "amplitude-android/2.39.0"
            device.adid = _uuid_from(rng) if rng.random() < 0.4 else None
            device.idfa = None
        elif roll < 0.85:
            brand, family, manufacturer, model, kind = rng.choice(_IOS)
            device.device_id = _uuid_from(rng, upper=True)
            device.platform, device.os_name = "iOS", "ios"
            device.os_version = rng.choice(["15.7", "16.6.1", "17.1.2", "17.2"])
            device.library = "amplitude-ios/8.17.1"
            device.idfa = _uuid_from(rng, upper=True) if rng.random() < 0.3 else None
            device.adid = None
        else:
            browser, version = rng.choice(_WEB)
            brand = family = manufacturer = model = kind = None
            device.device_id = _uuid_from(rng)
            device.platform, device.os_name, device.os_version = "Web", browser, version
            device.library = "amplitude-js/8.21.9"
            device.idfa = device.adid = None
        device.brand, device.family, device.manufacturer = brand, family, manufacturer
        device.model, device.type = model, kind
        device.carrier = rng.choice(_CARRIERS) if device.platform != "Web" else None
        device.amplitude_id = rng.randrange(100_000_000_000, 999_999_999_999)
        device.language = rng.choice(_LANGUAGES)
        device.start_version = rng.choice(_VERSIONS)
        device.version_name = rng.choice(
            [v for v in _VERSIONS if v >= device.start_version] or _VERSIONS
        )
        device.user = rng.choice(users) if rng.random() < 0.75 else None
        device.city = rng.choice(CITIES)
        located = rng.random() < 0.55
        device.lat = round(device.city[3] + rng.uniform(-0.2, 0.2), 6) if located else None
        device.lng = round(device.city[4] + rng.uniform(-0.2, 0.2), 6) if located else None
        device.ip = _ip(rng)
        device.key = f"{rng.getrandbits(48):012x}"
        devices.append(device)
    return devices, users
