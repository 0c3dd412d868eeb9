"""The AppMetrica field catalogue: each Logs API resource's fields, kinds, SQL types and identity.

The one declaration every AppMetrica part reads: the DWH schema (`dwh.appmetrica_schema`:
tables and migration 2), the reader (`sources.appmetrica_parse`), the mapping and the
formatter (`transform.appmetrica_mapping`: kinds and identity by default), the client's and the
export's default fields, the operator's resource choices and the API's resource enum.

Adding a field is one edit here plus a migration adding its column; adding a resource is one
`Resource(...)` here plus a migration creating its table (the recipe: docs/appmetrica.md,
"Adding a field or a resource"). This module imports nothing of the project, so every layer
may import it.

Kinds (the same words as `transform/mappings/*.yaml`, see docs/mappings.md):

| kind           | raw value (a string)           | SQL type        |
|----------------|--------------------------------|-----------------|
| `unix_seconds` | Unix seconds, e.g. `1709351853` | `timestamptz`   |
| `timestamp`    | `YYYY-MM-DD hh:mm:ss` (no zone) | `timestamp`     |
| `bigint`       | a signed 64-bit integer        | `bigint`        |
| `uint64`       | an unsigned 64-bit integer     | `numeric(20,0)` |
| `boolean`      | `true`/`false`/`1`/`0`         | `boolean`       |
| `json`         | a JSON text                    | `jsonb`         |
| `text`         | anything                       | `text`          |

An empty string is NULL whatever the kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SQL_TYPES: dict[str, str] = {
    "unix_seconds": "timestamptz",
    "timestamp": "timestamp",
    "bigint": "bigint",
    "uint64": "numeric(20,0)",
    "boolean": "boolean",
    "json": "jsonb",
    "text": "text",
}
"""SQL column type per field kind (unsigned 64-bit device ids do not fit a bigint)."""

KINDS: tuple[str, ...] = tuple(SQL_TYPES)
"""Every field kind."""

FORMATS: tuple[str, ...] = ("csv", "json")
"""The file formats the Logs API exports."""

LOADER_COLUMNS: tuple[str, ...] = ("row_uuid", "application_id")
"""The columns every appmetrica table starts with, filled by the loader (not from a field)."""


@dataclass(frozen=True)
class Field:
    """One Logs API field: its name and kind."""

    name: str
    kind: str = "text"

    @property
    def sql_type(self) -> str:
        """The SQL type of the field's column."""
        return SQL_TYPES[self.kind]


@dataclass(frozen=True)
class Resource:
    """One Logs API resource: its fields (documentation order), identity and canonical time.

    `identity`: the fields (after the application id) whose values make up a row's
    deterministic key `row_uuid`; `time_field`: indexed together with `application_id`.
    """

    name: str
    fields: tuple[Field, ...]
    identity: tuple[str, ...]
    time_field: str
    kinds: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = {item.name: item.kind for item in self.fields}
        where = f"AppMetrica resource {self.name!r}"
        if len(kinds) != len(self.fields):
            raise ValueError(f"{where}: a field is declared twice")
        unknown = {name: kind for name, kind in kinds.items() if kind not in SQL_TYPES}
        if unknown:
            raise ValueError(f"{where}: unknown kind(s) {unknown}; use one of {', '.join(KINDS)}")
        if "application_id" not in kinds:
            raise ValueError(f"{where}: every resource has the field application_id")
        for name in (*self.identity, self.time_field):
            if name not in kinds:
                raise ValueError(f"{where}: identity/time field {name!r} is not one of its fields")
        object.__setattr__(self, "kinds", kinds)

    @property
    def field_names(self) -> tuple[str, ...]:
        """Every field's name, in the documentation's order (the default export)."""
        return tuple(item.name for item in self.fields)


def fields(*declared: str | tuple[str, str]) -> tuple[Field, ...]:
    """Fields from names (text) and (name, kind) pairs, in the given order."""
    return tuple(Field(item) if isinstance(item, str) else Field(*item) for item in declared)


# Runs of fields several resources list in the same order (the order is the default export's
# and the columns').
_DEVICE = (("appmetrica_device_id", "uint64"), "city", "connection_type", "country_iso_code")
_HARDWARE = ("device_locale", "device_manufacturer", "device_model", "device_type", "google_aid")
_ADS_AND_CARRIER = ("ios_ifa", "ios_ifv", "mcc", "mnc", "operator_name")
_OS_AND_APP = (
    "os_name",
    "os_version",
    "profile_id",
    "windows_aid",
    "app_build_number",
    "app_package_name",
    "app_version_name",
)

DECLARED: tuple[Resource, ...] = (
    Resource(
        "events",
        fields(
            ("event_datetime", "timestamp"),
            ("event_json", "json"),
            "event_name",
            ("event_receive_datetime", "timestamp"),
            ("event_receive_timestamp", "unix_seconds"),
            ("event_timestamp", "unix_seconds"),
            ("session_id", "bigint"),
            "installation_id",
            *_DEVICE,
            "device_ipv6",
            *_HARDWARE,
            *_ADS_AND_CARRIER,
            "original_device_model",
            *_OS_AND_APP,
            ("application_id", "bigint"),
        ),
        identity=(
            "appmetrica_device_id",
            "event_timestamp",
            "event_name",
            "session_id",
            "event_json",
        ),
        time_field="event_timestamp",
    ),
    Resource(
        "installations",
        fields(
            ("application_id", "bigint"),
            "installation_id",
            "attributed_touch_type",
            ("click_datetime", "timestamp"),
            "click_id",
            "click_ipv6",
            ("click_timestamp", "unix_seconds"),
            "click_url_parameters",
            "click_user_agent",
            "profile_id",
            ("publisher_id", "bigint"),
            "publisher_name",
            "tracker_name",
            ("tracking_id", "bigint"),
            ("install_datetime", "timestamp"),
            "install_ipv6",
            ("install_receive_datetime", "timestamp"),
            ("install_receive_timestamp", "unix_seconds"),
            ("install_timestamp", "unix_seconds"),
            ("is_reattribution", "boolean"),
            ("is_reinstallation", "boolean"),
            "match_type",
            "fingerprint_method",
            *_DEVICE,
            *_HARDWARE,
            "oaid",
            *_ADS_AND_CARRIER,
            "os_name",
            "os_version",
            "windows_aid",
            "app_package_name",
            "app_version_name",
        ),
        identity=("appmetrica_device_id", "installation_id", "install_timestamp"),
        time_field="install_timestamp",
    ),
    Resource(
        "sessions_starts",
        fields(
            ("session_id", "bigint"),
            ("session_start_datetime", "timestamp"),
            ("session_start_receive_datetime", "timestamp"),
            ("session_start_receive_timestamp", "unix_seconds"),
            ("session_start_timestamp", "unix_seconds"),
            *_DEVICE,
            "device_ipv6",
            *_HARDWARE,
            *_ADS_AND_CARRIER,
            *_OS_AND_APP,
            ("application_id", "bigint"),
        ),
        identity=("appmetrica_device_id", "session_id", "session_start_timestamp"),
        time_field="session_start_timestamp",
    ),
)
"""Every supported Logs API resource: THE declaration (see the module docstring)."""

RESOURCES: dict[str, Resource] = {resource.name: resource for resource in DECLARED}
"""The declared resources by name."""

RESOURCE_NAMES: tuple[str, ...] = tuple(RESOURCES)
"""The supported resources' names (the operator's and the API's choices)."""

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    name: resource.field_names for name, resource in RESOURCES.items()
}
"""Every field of each supported resource, in the documentation's order (the default export)."""


def resource(name: str, resources: Mapping[str, Resource] = RESOURCES) -> Resource:
    """A resource by name, or a ValueError naming the supported ones."""
    try:
        return resources[name]
    except KeyError:
        raise ValueError(
            f"unsupported AppMetrica resource {name!r}; use one of {', '.join(resources)}"
        ) from None


def field_kinds(resources: Iterable[Resource] = RESOURCES.values()) -> dict[str, str]:
    """The kind of every field of these resources by name; a ValueError when one name is
    declared with two kinds (a field means the same thing in every resource)."""
    kinds: dict[str, str] = {}
    for item in resources:
        for name, kind in item.kinds.items():
            if kinds.setdefault(name, kind) != kind:
                raise ValueError(
                    f"AppMetrica field {name!r} is {kinds[name]} in one resource and {kind} in "
                    f"{item.name}: a field has one kind"
                )
    return kinds


def field_text(value: Any) -> str:
    """A JSON value as the Logs API sends a field: a string ("" for null, JSON for objects)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
