"""The declarative AppMetrica mapping: per Logs API resource its table, fields and identity.

`load_appmetrica_mapping()` reads `transform/mappings/appmetrica.yaml`, validates it with
Pydantic against the `appmetrica` table specs, and compiles it. For one raw file,
`mapping.resource(name).formatter(application_id, present_fields)` gives a `RowFormatter`
that turns a raw record (all strings, as the Logs API sends them) into one COPY text line
in a single pass (see `transform.appmetrica_formatter`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.dwh.appmetrica_schema import APPMETRICA_TABLES
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.sources.appmetrica_parse import field_text
from dwh_helper.transform.appmetrica_formatter import LOADER_COLUMNS, RowFormatter, canonical_json
from dwh_helper.transform.mapping_file import read_mapping_file
from dwh_helper.transform.values import OnInvalid, yaml_null_policy

log = logging.getLogger(__name__)

MAPPING_PATH = Path(__file__).with_name("mappings") / "appmetrica.yaml"

FieldKind = Literal["timestamp", "datetime", "bigint", "uint64", "bool", "json", "text"]

KIND_OF_COLUMN: dict[str, FieldKind] = {
    "timestamptz": "timestamp",
    "timestamp": "datetime",
    "bigint": "bigint",
    "numeric(20,0)": "uint64",
    "boolean": "bool",
    "jsonb": "json",
    "text": "text",
}
"""The kind a bare field takes from its column's SQL type."""

_ALLOWED_KINDS: dict[str, frozenset[str]] = {
    "timestamptz": frozenset({"timestamp"}),
    "timestamp": frozenset({"datetime"}),
    "bigint": frozenset({"bigint"}),
    "numeric(20,0)": frozenset({"uint64", "bigint"}),
    "boolean": frozenset({"bool"}),
    "jsonb": frozenset({"json"}),
    "text": frozenset({"text"}),
}
__all__ = [
    "AppMetricaMapping",
    "AppMetricaMappingError",
    "ResourceMapping",
    "RowFormatter",
    "canonical_json",
    "field_text",
    "load_appmetrica_mapping",
]


class AppMetricaMappingError(ValueError):
    """The AppMetrica mapping file is invalid; the message names the file and the entry."""


class FieldRule(BaseModel):
    """A field given in full: its kind and what an invalid value costs."""

    model_config = ConfigDict(extra="forbid")

    kind: FieldKind | None = None
    on_invalid: OnInvalid | None = Field(
        None,
        description="reject the record, or store NULL and report the value (default: reject "
        "for identity fields, null for the others)",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_null(cls, data: Any) -> Any:
        """`on_invalid: null` in YAML reads as None: it means the policy `null`."""
        return yaml_null_policy(data)


class ResourceRule(BaseModel):
    """One Logs API resource: its table in schema appmetrica, identity fields, fields and kinds."""

    model_config = ConfigDict(extra="forbid")

    table: str
    identity: list[str] = Field(min_length=1, description="fields that identify a row")
    fields: dict[str, FieldKind | FieldRule | None] = Field(
        min_length=1, description="field -> kind, or {kind, on_invalid}"
    )

    def kind_of(self, name: str) -> str | None:
        """The kind given for a field (None: its column's)."""
        rule = self.fields[name]
        return rule.kind if isinstance(rule, FieldRule) else rule

    def on_invalid_of(self, name: str) -> OnInvalid:
        """What an invalid value of a field costs: as given, else reject for identity fields."""
        rule = self.fields[name]
        if isinstance(rule, FieldRule) and rule.on_invalid:
            return rule.on_invalid
        return "reject" if name in self.identity else "null"


class AppMetricaMappingFile(BaseModel):
    """The whole mapping file: the source, the reject id field, and the resources."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["appmetrica"] = "appmetrica"
    record_id: str = Field(description="field that identifies a record in load_rejects")
    resources: dict[str, ResourceRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_against_tables(self) -> AppMetricaMappingFile:
        for resource, rule in self.resources.items():
            where = f"resources.{resource}"
            if not re.fullmatch(r"[a-z_0-9]+", resource):
                raise ValueError(f"{where}: {resource!r} is not a Logs API resource name")
            spec = APPMETRICA_TABLES.get(rule.table)
            if spec is None:
                raise ValueError(
                    f"{where}.table: no table appmetrica.{rule.table}; migration 2 creates "
                    f"{', '.join(APPMETRICA_TABLES)}"
                )
            for name in rule.fields:
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
            for name in rule.identity:
                if name not in rule.fields:
                    raise ValueError(f"{where}.identity: {name} is not one of the fields")
            if len(set(rule.identity)) != len(rule.identity):
                raise ValueError(f"{where}.identity: a field is listed twice")
        return self


@dataclass(frozen=True)
class ResourceMapping:
    """One resource compiled: its table spec, (field, kind) in column order, identity fields."""

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

    def formatter(
        self,
        application_id: str | int,
        present: Iterable[str] | None = None,
        *,
        header: Sequence[str] | None = None,
        structs: bool = False,
    ) -> RowFormatter:
        """A RowFormatter for one file of this application.

        `present`: the fields the file's records hold (mappings); `header`: the order of the
        values of sequence records (a CSV header); `structs`: records are msgspec Structs
        with the header's fields in order.
        """
        return RowFormatter(self, application_id, present, header=header, structs=structs)


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
                f"mapped: {', '.join(self.resources)} — add it under `resources:`"
            ) from None


def compile_appmetrica_mapping(
    model: AppMetricaMappingFile, path: Path | None = None
) -> AppMetricaMapping:
    """A validated mapping model → an AppMetricaMapping (fields in the table's column order)."""
    resources = {}
    for resource, rule in model.resources.items():
        spec = APPMETRICA_TABLES[rule.table]
        fields = tuple(
            (column.name, rule.kind_of(column.name) or KIND_OF_COLUMN[column.type])
            for column in spec.columns
            if column.name in rule.fields
        )
        rejecting = frozenset(n for n in rule.fields if rule.on_invalid_of(n) == "reject")
        resources[resource] = ResourceMapping(
            resource, spec, fields, tuple(rule.identity), rejecting
        )
    return AppMetricaMapping(model.source, model.record_id, resources, path)


def load_appmetrica_mapping(path: Path | str | None = None) -> AppMetricaMapping:
    """Read, validate and compile a mapping file (default: the shipped `appmetrica.yaml`)."""
    path = Path(path) if path is not None else MAPPING_PATH
    model = read_mapping_file(path, AppMetricaMappingFile, AppMetricaMappingError)
    return compile_appmetrica_mapping(model, path)
