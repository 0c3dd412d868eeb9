"""The declarative AppMetrica mapping: per Logs API resource its table, fields and identity.

By default every resource of the field catalogue (`dwh_helper.catalogue.appmetrica`) is
mapped as declared there: every field with its kind, the catalogue's identity. The mapping
file `transform/mappings/appmetrica.yaml` (read by `load_appmetrica_mapping()`, validated
with Pydantic against the `appmetrica` table specs) says only what differs: a narrower field
list, a kind, what an invalid value costs. For one raw file,
`RowFormatter(mapping.resource(name), application_id, present_fields)`
(`transform.appmetrica_formatter`) turns a raw record (all strings, as the Logs API sends
them) into one COPY text line in a single pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.catalogue.appmetrica import LOADER_COLUMNS, RESOURCES, SQL_TYPES, Resource
from dwh_helper.dwh.appmetrica_schema import APPMETRICA_TABLES, IDENTITY_FIELDS, table_spec
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.transform.mapping_file import PolicyRule, read_mapping_file
from dwh_helper.transform.values import OnInvalid

log = logging.getLogger(__name__)

MAPPING_PATH = Path(__file__).with_name("mappings") / "appmetrica.yaml"

FieldKind = Literal["unix_seconds", "timestamp", "bigint", "uint64", "boolean", "json", "text"]
"""The catalogue's kinds (`catalogue.appmetrica.KINDS`): the vocabulary of the mapping file."""

KIND_OF_COLUMN: dict[str, str] = {sql_type: kind for kind, sql_type in SQL_TYPES.items()}
"""The kind a bare field takes from its column's SQL type."""

_ALLOWED_KINDS: dict[str, frozenset[str]] = {
    sql_type: frozenset({kind, "bigint"} if kind == "uint64" else {kind})
    for kind, sql_type in SQL_TYPES.items()
}
__all__ = [
    "AppMetricaMapping",
    "AppMetricaMappingError",
    "ResourceMapping",
    "default_mapping",
    "load_appmetrica_mapping",
    "resource_mapping",
]


class AppMetricaMappingError(ValueError):
    """The AppMetrica mapping file is invalid; the message names the file and the entry."""


class FieldRule(PolicyRule):
    """A field given in full: its kind and what an invalid value costs."""

    model_config = ConfigDict(extra="forbid")

    kind: FieldKind | None = None


class ResourceRule(BaseModel):
    """One Logs API resource where it differs from the catalogue: its table, identity, fields."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(None, description="table in schema appmetrica (default: resource)")
    identity: list[str] | None = Field(
        None, min_length=1, description="fields that identify a row (default: the catalogue's)"
    )
    fields: dict[str, FieldKind | FieldRule | None] | None = Field(
        None,
        min_length=1,
        description="field -> kind, or {kind, on_invalid} (default: every column, its kind)",
    )

    def table_of(self, resource: str) -> str:
        """The table this resource loads into."""
        return self.table or resource

    def fields_of(self, spec: TableSpec) -> dict[str, FieldKind | FieldRule | None]:
        """The fields given, or every column of the table the loader does not fill."""
        if self.fields is not None:
            return self.fields
        return {name: None for name in spec.column_names if name not in LOADER_COLUMNS}

    def identity_of(self, spec: TableSpec) -> tuple[str, ...]:
        """The identity given, or the catalogue's for the table's resource."""
        if self.identity is not None:
            return tuple(self.identity)
        return IDENTITY_FIELDS.get(spec.name, ())

    def kind_of(self, name: str) -> str | None:
        """The kind given for a field (None: its column's)."""
        rule = (self.fields or {}).get(name)
        return rule.kind if isinstance(rule, FieldRule) else rule

    def on_invalid_of(self, name: str, identity: tuple[str, ...]) -> OnInvalid:
        """What an invalid value of a field costs: as given, else reject for identity fields."""
        rule = (self.fields or {}).get(name)
        default: OnInvalid = "reject" if name in identity else "null"
        return rule.policy(default) if isinstance(rule, FieldRule) else default


class AppMetricaMappingFile(BaseModel):
    """The whole mapping file: the source, the reject id field, and the resources that differ
    from the catalogue (every other catalogue resource is mapped as declared there)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["appmetrica"] = "appmetrica"
    record_id: str = Field(description="field that identifies a record in load_rejects")
    resources: dict[str, ResourceRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_against_tables(self) -> AppMetricaMappingFile:
        for resource, rule in self.resources.items():
            where = f"resources.{resource}"
            if not re.fullmatch(r"[a-z_0-9]+", resource):
                raise ValueError(f"{where}: {resource!r} is not a Logs API resource name")
            spec = APPMETRICA_TABLES.get(rule.table_of(resource))
            if spec is None:
                raise ValueError(
                    f"{where}.table: no table appmetrica.{rule.table_of(resource)}; migration 2 "
                    f"creates {', '.join(APPMETRICA_TABLES)}"
                )
            fields = rule.fields_of(spec)
            for name in fields:
                kind = rule.kind_of(name)
                if name in LOADER_COLUMNS:
                    raise ValueError(
                        f"{where}.fields.{name}: filled by the loader; remove it from the mapping"
                    )
                if name not in spec.column_names:
                    raise ValueError(
                        f"{where}.fields.{name}: not a column of {spec.qualified}; valid: "
                        f"{', '.join(spec.column_names[2:])}"
                    )
                sql_type = spec.column(name).type
                allowed = _ALLOWED_KINDS.get(sql_type, frozenset())
                if kind is not None and kind not in allowed:
                    raise ValueError(
                        f"{where}.fields.{name}: kind {kind!r} cannot fill a {sql_type} column; "
                        f"use {' or '.join(sorted(allowed)) or 'another column'}"
                    )
                if kind is None and sql_type not in KIND_OF_COLUMN:
                    raise ValueError(f"{where}.fields.{name}: give the kind of {sql_type}")
            identity = rule.identity_of(spec)
            if not identity:
                raise ValueError(f"{where}.identity: give the fields that identify a row")
            for name in identity:
                if name not in fields:
                    raise ValueError(f"{where}.identity: {name} is not one of the fields")
            if len(set(identity)) != len(identity):
                raise ValueError(f"{where}.identity: a field is listed twice")
        return self


@dataclass(frozen=True)
class ResourceMapping:
    """One resource compiled: its table spec, (field, kind) in column order, identity fields.

    `transform.appmetrica_formatter.RowFormatter(resource_mapping, application_id, ...)`
    turns a file's raw records into COPY lines of it."""

    resource: str
    spec: TableSpec
    fields: tuple[tuple[str, str], ...]
    identity: tuple[str, ...]
    rejecting: frozenset[str] = frozenset()
    """Fields whose invalid value rejects the record (the others are stored NULL, reported)."""

    @property
    def field_names(self) -> tuple[str, ...]:
        """The Logs API fields this resource loads (to request in an export)."""
        return tuple(name for name, _ in self.fields)

    def kind(self, name: str) -> str:
        """The kind of one of the fields."""
        return dict(self.fields)[name]


def resource_mapping(resource: Resource, spec: TableSpec | None = None) -> ResourceMapping:
    """A catalogue resource mapped as declared: every field with its kind, its identity
    (an invalid value of an identity field rejects the record, of another is stored NULL)."""
    spec = spec or table_spec(resource)
    fields = tuple(
        (name, resource.kinds[name]) for name in spec.column_names if name not in LOADER_COLUMNS
    )
    identity = resource.identity
    return ResourceMapping(resource.name, spec, fields, identity, frozenset(identity))


@dataclass(frozen=True)
class AppMetricaMapping:
    """The loaded mapping: source, reject id field and the compiled resources."""

    source: str
    record_id: str
    resources: Mapping[str, ResourceMapping]
    path: Path | None = None

    def resource(self, name: str) -> ResourceMapping:
        """A resource's mapping, or a ValueError naming the file and the resources it maps."""
        try:
            return self.resources[name]
        except KeyError:
            raise ValueError(
                f"resource {name!r} is not in the AppMetrica mapping {self.path or ''}; "
                f"mapped: {', '.join(self.resources)} — declare it in "
                "dwh_helper/catalogue/appmetrica.py or under `resources:`"
            ) from None


def default_mapping(
    resources: Mapping[str, Resource] = RESOURCES, record_id: str = "appmetrica_device_id"
) -> AppMetricaMapping:
    """Every resource of a catalogue mapped as declared there (no mapping file)."""
    return AppMetricaMapping(
        "appmetrica",
        record_id,
        {name: resource_mapping(resource) for name, resource in resources.items()},
    )


def compile_appmetrica_mapping(
    model: AppMetricaMappingFile, path: Path | None = None
) -> AppMetricaMapping:
    """A validated mapping model → an AppMetricaMapping: the catalogue's resources as declared,
    those the file names as it says (fields in the table's column order)."""
    resources = {
        name: resource_mapping(resource, APPMETRICA_TABLES[name])
        for name, resource in RESOURCES.items()
        if name not in model.resources
    }
    for resource, rule in model.resources.items():
        spec = APPMETRICA_TABLES[rule.table_of(resource)]
        given = rule.fields_of(spec)
        fields = tuple(
            (column.name, rule.kind_of(column.name) or KIND_OF_COLUMN[column.type])
            for column in spec.columns
            if column.name in given
        )
        identity = rule.identity_of(spec)
        rejecting = frozenset(n for n in given if rule.on_invalid_of(n, identity) == "reject")
        resources[resource] = ResourceMapping(resource, spec, fields, identity, rejecting)
    ordered = {
        name: resources[name] for name in [*RESOURCES, *model.resources] if name in resources
    }
    return AppMetricaMapping(model.source, model.record_id, ordered, path)


def load_appmetrica_mapping(path: Path | str | None = None) -> AppMetricaMapping:
    """Read, validate and compile a mapping file (default: the shipped `appmetrica.yaml`)."""
    path = Path(path) if path is not None else MAPPING_PATH
    model = read_mapping_file(path, AppMetricaMappingFile, AppMetricaMappingError)
    return compile_appmetrica_mapping(model, path)
