"""Specs of the DWH tables (columns, types, conflict keys), read by the schema and repository."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """One column: its name, SQL type and whether it may be null."""

    name: str
    type: str
    not_null: bool = False
    default: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A DWH table: its columns, the key `ON CONFLICT` uses, and the column `pk` filters on."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    pk: str
    schema: str = "public"
    partitioned_by: str | None = None
    indexes: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def qualified(self) -> str:
        """`schema.name`, quoted."""
        return f'"{self.schema}"."{self.name}"'

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in table order."""
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        """The column called `name` (KeyError if none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def pk_type(self) -> str:
        """SQL type of the `pk` column."""
        return self.column(self.pk).type


def _cols(*spec: str) -> tuple[Column, ...]:
    columns = []
    for item in spec:
        name, _, rest = item.partition(" ")
        not_null = rest.endswith(" NOT NULL")
        columns.append(Column(name, rest.removesuffix(" NOT NULL"), not_null))
    return tuple(columns)


EVENTS_PART = TableSpec(
    "events_part",
    _cols(
        "uuid uuid NOT NULL",
        "event_type text",
        "event_time timestamp NOT NULL",
        "user_id bigint",
        "platform text",
        "device_id text",
        "event_id bigint",
        "language text",
        "os_name text",
        "os_version text",
        "session_id bigint",
        "start_version text",
        "version_name text",
    ),
    key=("uuid", "event_time"),
    pk="uuid",
    partitioned_by="event_time",
)
MOBILE_DEVICES = TableSpec(
    "mobile_devices",
    _cols(
        "device_id text NOT NULL",
        "device_brand text",
        "device_carrier text",
        "device_family text",
        "device_manufacturer text",
        "device_model text",
        "device_type text",
    ),
    key=("device_id",),
    pk="device_id",
)
TECHNICAL_DATA = TableSpec(
    "technical_data",
    _cols(
        "uuid uuid NOT NULL",
        "insert_id text",
        "amplitude_attribution_ids jsonb",
        "amplitude_id bigint",
        "is_attribution_event text",
        "library text",
        "group_properties_json jsonb",
        "groups_json jsonb",
        "plan_json jsonb",
    ),
    key=("uuid",),
    pk="uuid",
)
TMP_EVENT_PROPERTIES = TableSpec(
    "tmp_event_properties",
    _cols("uuid uuid NOT NULL", "event_properties_json jsonb"),
    key=("uuid",),
    pk="uuid",
)
TMP_USER_PROPERTIES = TableSpec(
    "tmp_user_properties",
    (
        *_cols(
            "uuid uuid NOT NULL",
            "user_properties_json jsonb",
            "language text",
            "session_id bigint",
            "start_version text",
            "event_time timestamp",
        ),
        Column("migrated", "boolean", not_null=True, default="false"),
    ),
    key=("uuid",),
    pk="uuid",
    indexes=(("migrated", "event_time"),),
)
USER_LOCATIONS = TableSpec(
    "user_locations",
    _cols(
        "uuid uuid NOT NULL",
        "location_lat double precision",
        "location_lng double precision",
        "city text",
        "country text",
        "ip_address inet",
        "region text",
    ),
    key=("uuid",),
    pk="uuid",
)
PERMANENT_USER_PROPERTIES = TableSpec(
    "permanent_user_properties",
    _cols(
        "ehr_id bigint NOT NULL",
        "first_login_at timestamp NOT NULL",
        "gender text",
        "cohort_day integer",
        "cohort_week integer",
        "cohort_month integer",
        "registered_via_app boolean",
        "source text",
    ),
    key=("ehr_id",),
    pk="ehr_id",
)
CHANGEABLE_USER_PROPERTIES = TableSpec(
    "changeable_user_properties",
    _cols(
        "uuid uuid NOT NULL",
        "ehr_id bigint",
        "event_time timestamp NOT NULL",
        "language text",
        "age integer",
        "app_city text",
        "push_permission boolean",
        "location_permission boolean",
        "authorization_status boolean",
        "telemed_files_sent integer",
        "appointments_cancelled integer",
        "telemed_files_received integer",
        "telemed_messages_received integer",
        "telemed_messages_sent integer",
        "telemed_consultations_resumed integer",
        "appointments_booked integer",
        "session_id bigint",
        "start_version text",
    ),
    key=("uuid",),
    pk="ehr_id",
    indexes=(("ehr_id", "event_time"),),
)

DWH_TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        EVENTS_PART,
        MOBILE_DEVICES,
        TECHNICAL_DATA,
        TMP_EVENT_PROPERTIES,
        TMP_USER_PROPERTIES,
        USER_LOCATIONS,
        PERMANENT_USER_PROPERTIES,
        CHANGEABLE_USER_PROPERTIES,
    )
}
"""The company's eight tables, by name."""

CHANGEABLE_STATE_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in CHANGEABLE_USER_PROPERTIES.column_names
    if name not in ("uuid", "event_time", "session_id")
)
"""Columns compared to decide whether a person's changeable state changed."""


def get_table(name: str) -> TableSpec:
    """A DWH table spec by name, or a KeyError listing the valid names."""
    try:
        return DWH_TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; valid: {', '.join(DWH_TABLES)}") from None
