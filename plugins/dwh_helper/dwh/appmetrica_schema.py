"""The `appmetrica` DWH schema: one typed table per Logs API resource, keyed by a UUIDv5.

Migration 2 creates schema `appmetrica` with one table per resource of the field catalogue
(`dwh_helper.catalogue.appmetrica`: `events`, `installations`, `sessions_starts`), by
`create_appmetrica_schema`, listed in `dwh.schema.MIGRATIONS`. Each table has every field of its
resource as a typed column (the catalogue's kinds and SQL types), plus `application_id bigint`
and `row_uuid uuid` as the primary key.

Logs API rows have no natural key, so `row_uuid` is a UUIDv5 in `ROW_UUID_NAMESPACE` over the
fields that identify a row (the resource's `identity`, always preceded by the application id),
computed by the loader's formatter (`transform.appmetrica_formatter`): re-loading the same day
inserts nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable, Mapping

import psycopg
from psycopg import sql

from dwh_helper.catalogue.appmetrica import LOADER_COLUMNS, RESOURCES, SQL_TYPES, Resource
from dwh_helper.dwh.ddl import conform_table
from dwh_helper.dwh.tables import Column, TableSpec

SCHEMA = "appmetrica"
DEFAULT_RESOURCE = "events"

ROW_UUID_NAMESPACE = uuid.UUID("6d1df4cb-3ff4-5bbc-914a-bf1b5d4b76b1")
"""Namespace of every row_uuid (uuid5(NAMESPACE_URL, 'https://github.com/dwh-helper/appmetrica'))."""

IDENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    name: resource.identity for name, resource in RESOURCES.items()
}
"""Fields (after the application id) whose values make up a row's identity, per resource."""

FALLBACK_MARK = "*"
"""Joins the key's parts when a record lacks an identity field, so such a key never equals a
declared one."""

__all__ = [
    "APPMETRICA_TABLES",
    "FALLBACK_MARK",
    "IDENTITY_FIELDS",
    "ROW_UUID_NAMESPACE",
    "SCHEMA",
    "SQL_TYPES",
    "appmetrica_table",
    "create_appmetrica_schema",
    "fallback_identity",
    "identity_fields",
    "table_spec",
]


def table_spec(resource: Resource, schema: str = SCHEMA) -> TableSpec:
    """The table of a catalogue resource: `row_uuid`, `application_id`, then its fields typed."""
    row_uuid, application_id = LOADER_COLUMNS
    columns = [
        Column(row_uuid, "uuid", not_null=True),
        Column(application_id, "bigint", not_null=True),
    ]
    columns += [
        Column(item.name, item.sql_type)
        for item in resource.fields
        if item.name not in LOADER_COLUMNS
    ]
    return TableSpec(
        resource.name,
        tuple(columns),
        key=(row_uuid,),
        pk=row_uuid,
        schema=schema,
        indexes=((application_id, resource.time_field),),
    )


APPMETRICA_TABLES: dict[str, TableSpec] = {
    name: table_spec(resource) for name, resource in RESOURCES.items()
}
"""Table specs of schema `appmetrica`, by resource name."""


def appmetrica_table(resource: str = DEFAULT_RESOURCE) -> TableSpec:
    """The table spec of a resource, or a KeyError listing the supported resources."""
    try:
        return APPMETRICA_TABLES[resource]
    except KeyError:
        raise KeyError(
            f"no appmetrica table for resource {resource!r}; supported: "
            f"{', '.join(APPMETRICA_TABLES)}"
        ) from None


def identity_fields(resource: str) -> tuple[str, ...]:
    """Fields an export must include so that row_uuid identifies rows (application_id aside)."""
    appmetrica_table(resource)
    return IDENTITY_FIELDS[resource]


def fallback_identity(names: Iterable[str], present: Container[str]) -> tuple[str, ...]:
    """The identity of a record (or file) lacking an identity field: every field it holds, in
    the table's column order — rows differing anywhere stay apart, exact duplicates collapse."""
    return tuple(name for name in names if name in present)


def create_appmetrica_schema(
    conn: psycopg.Connection, tables: Mapping[str, TableSpec] = APPMETRICA_TABLES
) -> None:
    """CREATE SCHEMA appmetrica and create (or conform: new columns added) every table of the
    catalogue; safe to run again."""
    for schema in dict.fromkeys(spec.schema for spec in tables.values()):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for spec in tables.values():
        conform_table(conn, spec)
