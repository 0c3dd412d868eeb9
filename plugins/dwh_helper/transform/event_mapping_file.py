"""The event mapping file (`transform/mappings/amplitude.yaml`): its Pydantic models.

Per target table, which event field fills each column (`from`), its type (the vocabulary of
docs/mappings.md, shared with the AppMetrica mapping), the raw values meaning NULL, whether
it is required and what an invalid value costs; validated against the DWH table specs.
`transform.event_mapping` compiles a validated file into the loader's line functions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.dwh.tables import get_table
from dwh_helper.transform.mapping_file import PolicyRule

ValueType = Literal[
    "text", "uuid", "bigint", "integer", "double", "boolean", "timestamp", "json", "inet"
]
"""The types a column may be filled as (docs/mappings.md: one vocabulary for both mapping files)."""

DEFAULT_TYPE: dict[str, ValueType] = {
    "text": "text",
    "uuid": "uuid",
    "bigint": "bigint",
    "integer": "integer",
    "double precision": "double",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "jsonb": "json",
    "inet": "inet",
}
"""The type a column takes when the mapping does not say, by its SQL type."""

ALLOWED_TYPES: dict[str, set[str]] = {
    "text": {"text"},
    "uuid": {"uuid", "text"},
    "bigint": {"bigint", "integer"},
    "integer": {"integer"},
    "double precision": {"double"},
    "boolean": {"boolean"},
    "timestamp": {"timestamp"},
    "jsonb": {"json"},
    "inet": {"inet", "text"},
}
"""The types that may fill a column, by its SQL type."""


class MappingFileError(ValueError):
    """A mapping file is invalid; the message names the file and the entry."""


class ColumnRule(PolicyRule):
    """How one column is filled: the event field, its type, the raw values meaning NULL."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(None, alias="from", description="event field (default: column)")
    type: ValueType | None = None
    null_values: list[str | int | float | bool] = Field(default_factory=list)
    required: bool = False


class TableRule(BaseModel):
    """The columns of one target table, and when an event gives it no row."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, ColumnRule | None]
    skip_when_null: str | None = Field(None, description="no row when this column is NULL")
    first_per_file: bool = Field(False, description="keep the first row per key within a file")


class EventMappingFile(BaseModel):
    """A whole mapping file: the source it is for and its target tables in load order."""

    model_config = ConfigDict(extra="forbid")

    source: str
    record_id: str = Field(description="event field that identifies a record in rejects")
    tables: dict[str, TableRule]

    @model_validator(mode="after")
    def _check_against_tables(self) -> EventMappingFile:
        for table, rule in self.tables.items():
            try:
                spec = get_table(table)
            except KeyError as exc:
                raise ValueError(f"tables.{table}: {exc.args[0]}") from None
            for column, column_rule in rule.columns.items():
                if column not in spec.column_names:
                    raise ValueError(
                        f"tables.{table}.columns.{column}: not a column of {table}; "
                        f"valid: {', '.join(spec.column_names)}"
                    )
                sql_type = spec.column(column).type
                chosen = (column_rule.type if column_rule else None) or DEFAULT_TYPE[sql_type]
                if chosen not in ALLOWED_TYPES[sql_type]:
                    raise ValueError(
                        f"tables.{table}.columns.{column}: type {chosen!r} cannot fill a "
                        f"{sql_type} column; use one of {sorted(ALLOWED_TYPES[sql_type])}"
                    )
            for column in spec.columns:
                if column.not_null and column.default is None and column.name not in rule.columns:
                    raise ValueError(f"tables.{table}: NOT NULL column {column.name} is not mapped")
            if rule.skip_when_null and rule.skip_when_null not in rule.columns:
                raise ValueError(f"tables.{table}.skip_when_null: {rule.skip_when_null} not mapped")
        return self
