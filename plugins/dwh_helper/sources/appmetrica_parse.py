"""Streaming reads of AppMetrica Logs API files (CSV or `{"data": [...]}` JSON) and value casts.

The Logs API sends every value as a string. `iter_records` yields each record
as it was sent (strings, a UTF-8 BOM stripped) without holding the file in
memory; `cast_record` turns one record into typed values by field name:

| field                                 | kind      | Python value                       |
|---------------------------------------|-----------|------------------------------------|
| `*_timestamp` (Unix seconds)          | timestamp | aware `datetime` in UTC            |
| `*_datetime` (`YYYY-MM-DD hh:mm:ss`)  | datetime  | naive `datetime` (zone unstated)   |
| application/session/publisher/tracking id | bigint | `int` (signed 64-bit)            |
| `appmetrica_device_id`                | uint64    | `int` (unsigned 64-bit)            |
| `is_reattribution`, `is_reinstallation` | bool    | `bool`                             |
| `event_json`                          | json      | the parsed JSON value              |
| anything else                         | text      | `str`                              |

An empty string is `None` whatever the kind.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ijson

from dwh_helper.transform import values

FORMATS: tuple[str, ...] = ("csv", "json")

EVENTS_FIELDS: tuple[str, ...] = (
    "event_datetime",
    "event_json",
    "event_name",
    "event_receive_datetime",
    "event_receive_timestamp",
    "event_timestamp",
    "session_id",
    "installation_id",
    "appmetrica_device_id",
    "city",
    "connection_type",
    "country_iso_code",
    "device_ipv6",
    "device_locale",
    "device_manufacturer",
    "device_model",
    "device_type",
    "google_aid",
    "ios_ifa",
    "ios_ifv",
    "mcc",
    "mnc",
    "operator_name",
    "original_device_model",
    "os_name",
    "os_version",
    "profile_id",
    "windows_aid",
    "app_build_number",
    "app_package_name",
    "app_version_name",
    "application_id",
)
INSTALLATIONS_FIELDS: tuple[str, ...] = (
    "application_id",
    "installation_id",
    "attributed_touch_type",
    "click_datetime",
    "click_id",
    "click_ipv6",
    "click_timestamp",
    "click_url_parameters",
    "click_user_agent",
    "profile_id",
    "publisher_id",
    "publisher_name",
    "tracker_name",
    "tracking_id",
    "install_datetime",
    "install_ipv6",
    "install_receive_datetime",
    "install_receive_timestamp",
    "install_timestamp",
    "is_reattribution",
    "is_reinstallation",
    "match_type",
    "fingerprint_method",
    "appmetrica_device_id",
    "city",
    "connection_type",
    "country_iso_code",
    "device_locale",
    "device_manufacturer",
    "device_model",
    "device_type",
    "google_aid",
    "oaid",
    "ios_ifa",
    "ios_ifv",
    "mcc",
    "mnc",
    "operator_name",
    "os_name",
    "os_version",
    "windows_aid",
    "app_package_name",
    "app_version_name",
)
SESSIONS_STARTS_FIELDS: tuple[str, ...] = (
    "session_id",
    "session_start_datetime",
    "session_start_receive_datetime",
    "session_start_receive_timestamp",
    "session_start_timestamp",
    "appmetrica_device_id",
    "city",
    "connection_type",
    "country_iso_code",
    "device_ipv6",
    "device_locale",
    "device_manufacturer",
    "device_model",
    "device_type",
    "google_aid",
    "ios_ifa",
    "ios_ifv",
    "mcc",
    "mnc",
    "operator_name",
    "os_name",
    "os_version",
    "profile_id",
    "windows_aid",
    "app_build_number",
    "app_package_name",
    "app_version_name",
    "application_id",
)

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "events": EVENTS_FIELDS,
    "installations": INSTALLATIONS_FIELDS,
    "sessions_starts": SESSIONS_STARTS_FIELDS,
}
"""Every field of each supported Logs API resource, in the documentation's order."""

BIGINT_FIELDS = frozenset({"application_id", "session_id", "publisher_id", "tracking_id"})
UINT64_FIELDS = frozenset({"appmetrica_device_id"})
BOOL_FIELDS = frozenset({"is_reattribution", "is_reinstallation"})
JSON_FIELDS = frozenset({"event_json"})


class CastError(ValueError):
    """A value that cannot be converted: names the field, the value, why, and the row if known."""

    def __init__(self, field: str, value: str, reason: str, row: int | None = None) -> None:
        where = f"row {row}: " if row is not None else ""
        shown = value if len(value) <= 200 else value[:200] + "..."
        super().__init__(f"{where}field {field!r} = {shown!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
        self.row = row


def field_kind(name: str) -> str:
    """The kind of a field by its name: timestamp, datetime, bigint, uint64, bool, json or text."""
    if name.endswith("_timestamp"):
        return "timestamp"
    if name.endswith("_datetime"):
        return "datetime"
    if name in BIGINT_FIELDS:
        return "bigint"
    if name in UINT64_FIELDS:
        return "uint64"
    if name in BOOL_FIELDS:
        return "bool"
    if name in JSON_FIELDS:
        return "json"
    return "text"


# The casts are the value layer's (`transform.values`): one definition of a valid value.


def _checked(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(value: str) -> Any:
        try:
            return cast(value)
        except values.InvalidValue as exc:
            raise ValueError(exc.reason) from None

    return check


_to_timestamp = _checked(values.unix_seconds_value)
_to_datetime = _checked(values.plain_datetime_value)
_to_bigint = _checked(lambda value: values.integer_number(value, "bigint"))
_to_uint64 = _checked(lambda value: values.integer_number(value, "uint64"))
_to_bool = _checked(values.loose_boolean_value)
_to_json = _checked(lambda value: values.clean_json(values.parse_json(value)))


_CASTERS: dict[str, Callable[[str], Any] | None] = {
    "timestamp": _to_timestamp,
    "datetime": _to_datetime,
    "bigint": _to_bigint,
    "uint64": _to_uint64,
    "bool": _to_bool,
    "json": _to_json,
    "text": None,
}
_CASTER_BY_FIELD: dict[str, Callable[[str], Any] | None] = {}


def field_caster(name: str) -> Callable[[str], Any] | None:
    """The function turning a non-empty raw value of this field into its type (None for text);
    it raises ValueError with the reason on a bad value."""
    return _caster(name)


def _caster(name: str) -> Callable[[str], Any] | None:
    try:
        return _CASTER_BY_FIELD[name]
    except KeyError:
        caster = _CASTER_BY_FIELD[name] = _CASTERS[field_kind(name)]
        return caster


def check_resource(resource: str) -> None:
    """Raise a ValueError naming the supported resources when `resource` is not one of them."""
    if resource not in DEFAULT_FIELDS:
        raise ValueError(
            f"unsupported AppMetrica resource {resource!r}; use one of {', '.join(DEFAULT_FIELDS)}"
        )


def cast_record(resource: str, record: dict[str, str], *, row: int | None = None) -> dict[str, Any]:
    """Typed values of one raw record (see the module table); `CastError` on a bad value.

    Fields outside the resource's documented list are kept as text.
    """
    check_resource(resource)
    typed: dict[str, Any] = {}
    for name, value in record.items():
        if value is None or value == "":
            typed[name] = None
            continue
        caster = _caster(name)
        if caster is None:
            typed[name] = value
            continue
        try:
            typed[name] = caster(value)
        except ValueError as exc:
            raise CastError(name, value, str(exc), row) from None
    return typed


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unsupported AppMetrica file format {fmt!r}; use 'csv' or 'json'")


def iter_records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(record number from 1, raw string values) for each record of a Logs API file, streamed.

    CSV goes through the `csv` module row by row; JSON (`{"data": [...]}`)
    through ijson, item by item. A leading UTF-8 BOM is skipped in both.
    """
    _check_format(fmt)
    path = Path(path)
    if fmt == "csv":
        yield from _iter_csv(path)
    else:
        yield from _iter_json(path)


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        for number, values in enumerate(reader, start=1):
            if len(values) != width:
                if not values:
                    continue
                raise ValueError(
                    f"{path}: CSV record {number} (line {reader.line_num}) has {len(values)} "
                    f"values, the header has {width}: the file is truncated or not a Logs API CSV"
                )
            yield number, dict(zip(header, values, strict=True))


def field_text(value: Any) -> str:
    """A JSON value as the Logs API would send it: a string ("" for null, JSON for objects)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _iter_json(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, "rb") as handle:
        if handle.read(3) != b"\xef\xbb\xbf":
            handle.seek(0)
        try:
            for number, item in enumerate(ijson.items(handle, "data.item"), start=1):
                if not isinstance(item, dict):
                    raise ValueError(
                        f"{path}: JSON record {number} is a {type(item).__name__}, not an object"
                    )
                yield number, {key: field_text(value) for key, value in item.items()}
        except ijson.JSONError as exc:
            raise ValueError(
                f"{path}: not a complete Logs API JSON file ({exc}); re-export the window"
            ) from exc
