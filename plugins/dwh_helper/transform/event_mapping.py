"""Declarative event → DWH rows mappings (YAML, validated by Pydantic when loaded).

A mapping file names, per target table, which event field fills each column,
which raw values mean NULL, and which column must be present. Loading it
compiles one small function per table that turns an event into a COPY text
line (see `dwh.copy_text`), so the hot path does no lookups in the rules.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.dwh.copy_text import NULL, TEXT, CopyDialect, escape, json_text
from dwh_helper.dwh.tables import TableSpec, get_table
from dwh_helper.transform.mapping_file import read_mapping_file

MAPPINGS_DIR = Path(__file__).with_name("mappings")

ValueType = Literal[
    "text", "uuid", "bigint", "integer", "double", "boolean", "timestamp", "json", "inet"
]
_DEFAULT_TYPE: dict[str, ValueType] = {
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
_ALLOWED: dict[str, set[str]] = {
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


class MappingError(ValueError):
    """An event cannot be mapped: which column, which value, why."""

    def __init__(self, table: str, column: str, value: Any, reason: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"{table}.{column}: {reason} (value {shown})")
        self.table, self.column, self.value, self.reason = table, column, value, reason


class MappingFileError(ValueError):
    """A mapping file is invalid; the message names the file and the entry."""


class ColumnRule(BaseModel):
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
                chosen = (column_rule.type if column_rule else None) or _DEFAULT_TYPE[sql_type]
                if chosen not in _ALLOWED[sql_type]:
                    raise ValueError(
                        f"tables.{table}.columns.{column}: type {chosen!r} cannot fill a "
                        f"{sql_type} column; use one of {sorted(_ALLOWED[sql_type])}"
                    )
            for column in spec.columns:
                if column.not_null and column.default is None and column.name not in rule.columns:
                    raise ValueError(f"tables.{table}: NOT NULL column {column.name} is not mapped")
            if rule.skip_when_null and rule.skip_when_null not in rule.columns:
                raise ValueError(f"tables.{table}.skip_when_null: {rule.skip_when_null} not mapped")
        return self


# -- casters: raw JSON value -> COPY text field (or MappingError) --------------------------

Caster = Callable[[Any], str]

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
_INT = re.compile(r"[+-]?\d+")
_BOUNDS = {"bigint": 2**63, "integer": 2**31}


class _CastFailure(ValueError):
    pass


def _text(value: Any) -> str:
    if value.__class__ is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return escape(value)
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json_text(value)


def _uuid(value: Any) -> str:
    if isinstance(value, str) and _UUID.fullmatch(value):
        return value
    raise _CastFailure("not a uuid")


def _integer(bound: int) -> Caster:
    def cast(value: Any) -> str:
        if isinstance(value, bool):
            raise _CastFailure("a boolean is not an integer")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INT.fullmatch(value.strip()):
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise _CastFailure("not an integer")
        if not -bound <= number < bound:
            raise _CastFailure(f"out of range for a {bound.bit_length()}-bit integer")
        return str(number)

    return cast


def _double(value: Any) -> str:
    if isinstance(value, bool):
        raise _CastFailure("a boolean is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _CastFailure("not a number") from None
    if not math.isfinite(number):
        raise _CastFailure("not a finite number")
    return repr(number)


def _boolean(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if value in ("true", "false", "True", "False"):
        return "t" if value in ("true", "True") else "f"
    raise _CastFailure("not a boolean")


def _timestamp(value: Any) -> str:
    if not isinstance(value, str):
        raise _CastFailure("not a timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _CastFailure("not an ISO timestamp") from None
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC).replace(tzinfo=None).isoformat()
    return value


def _json(value: Any) -> str:
    return json_text(value)


_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)


def _inet(value: Any) -> str:
    if not isinstance(value, str):
        raise _CastFailure("not an IP address")
    if _IPV4.fullmatch(value):
        return value
    try:
        socket.inet_pton(socket.AF_INET6, value)  # C parser, as strict as PostgreSQL's inet
    except (OSError, ValueError):
        raise _CastFailure("not an IP address") from None
    return value


_CASTERS: dict[str, Caster] = {
    "text": _text,
    "uuid": _uuid,
    "bigint": _integer(_BOUNDS["bigint"]),
    "integer": _integer(_BOUNDS["integer"]),
    "double": _double,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "json": _json,
    "inet": _inet,
}


@dataclass(frozen=True)
class _CompiledColumn:
    name: str
    source: str
    cast: Caster
    nulls: frozenset[Any]
    required: bool


_SCALARS = frozenset({str, int, float, bool})


def _hashable_null(value: Any) -> bool:
    return value is None or value.__class__ in _SCALARS


def _raw_json(value: Any) -> str:
    """A JSON value kept undecoded (`msgspec.Raw`) as an escaped COPY field."""
    text = bytes(value).decode()
    if text == "null":
        return NULL
    return escape(text)


@dataclass(frozen=True, eq=False)  # hashed by identity: a dict key on the hot path
class TableMapper:
    """One target table: the columns it fills and how a decoded event becomes its COPY line."""

    spec: TableSpec
    columns: tuple[str, ...]
    compiled: tuple[_CompiledColumn, ...]
    skip_when_null: str | None
    first_per_file: bool
    attributes: tuple[str, ...] = ()
    copy_dialect: CopyDialect = TEXT

    def __post_init__(self) -> None:
        plan = tuple(
            (
                _raw_json if column.cast is _json else column.cast,
                column.nulls or None,
                column.name == self.skip_when_null,
                column.required,
                self.first_per_file and column.name == self.spec.key[0],
                column.name,
            )
            for column in self.compiled
        )
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_values", attrgetter(*self.attributes))
        object.__setattr__(self, "_fast", _generate_line_function(self, plan))

    def line(self, record: Any) -> tuple[str | None, str | None]:
        """(COPY line or None when the event gives no row, key for first-per-file dedup)."""
        try:
            return self._fast(record)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the checked path below says precisely what is wrong
            return self.checked_line(record)

    def checked_line(self, record: Any) -> tuple[str | None, str | None]:
        """`line`, column by column, raising MappingError that names the column and value."""
        values = self._values(record)  # type: ignore[attr-defined]
        if len(self.attributes) == 1:
            values = (values,)
        fields: list[str] = []
        append = fields.append
        key: str | None = None
        name = ""
        value = None
        try:
            for value, (cast, nulls, skip, required, is_key, name) in zip(
                values,
                self._plan,
                strict=True,  # type: ignore[attr-defined]
            ):
                if value is None or (nulls and value.__class__ in _SCALARS and value in nulls):
                    if skip:
                        return None, None
                    if required:
                        raise MappingError(self.spec.name, name, value, "missing")
                    append(NULL)
                    continue
                text = cast(value)
                if is_key:
                    key = text
                append(text)
        except _CastFailure as failure:
            raise MappingError(self.spec.name, name, value, str(failure)) from None
        return "\t".join(fields), key


class _Invalid(Exception):
    """Raised by a generated line function; the checked path then names the problem."""


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]").search


def _generate_line_function(table: TableMapper, plan: tuple) -> Callable[[Any], Any]:
    """Compile one straight-line function for a table: no loop, no per-column dispatch.

    It gives the same result as `checked_line` for every valid record and raises on any
    problem, so that `line` falls back to `checked_line` to report it precisely.
    """
    namespace: dict[str, Any] = {
        "NULL": NULL,
        "SCALARS": _SCALARS,
        "Invalid": _Invalid,
        "TEXT": _text,
        "NEEDS_ESCAPE": _NEEDS_ESCAPE,
        "IS_UUID": _UUID.fullmatch,
    }
    body = ["def line(r):"]
    fields = []
    key = "None"
    for index, (attribute, (cast, nulls, skip, required, is_key, _name)) in enumerate(
        zip(table.attributes, plan, strict=True)
    ):
        namespace[f"C{index}"] = cast
        namespace[f"N{index}"] = nulls
        body.append(f"    v = r.{attribute}")
        null_test = "v is None"
        if nulls:
            null_test += f" or (v.__class__ in SCALARS and v in N{index})"
        if cast is _text:
            convert = "(v if v.__class__ is str and not NEEDS_ESCAPE(v) else TEXT(v))"
        elif cast is _CASTERS["bigint"] or cast is _CASTERS["integer"]:
            bound = _BOUNDS["bigint" if cast is _CASTERS["bigint"] else "integer"]
            convert = f"(str(v) if v.__class__ is int and {-bound} <= v < {bound} else C{index}(v))"
        elif cast is _uuid:
            convert = f"(v if v.__class__ is str and IS_UUID(v) else C{index}(v))"
        else:
            convert = f"C{index}(v)"
        if skip or required:
            on_null = "return None, None" if skip else "raise Invalid"
            body += [f"    if {null_test}:", f"        {on_null}", f"    a{index} = {convert}"]
        else:
            body.append(f"    a{index} = NULL if {null_test} else {convert}")
        fields.append(f"{{a{index}}}")
        if is_key:
            key = f"a{index}"
    tab = "\\t"
    body.append(f'    return f"{tab.join(fields)}", {key}')
    exec("\n".join(body), namespace)  # noqa: S102 - source built above from validated names
    return namespace["line"]


_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class EventMapping:
    """A loaded, validated mapping: its source, record id field and table mappers in load order.

    `decode` turns one NDJSON line into a record holding just the mapped fields
    (JSON-typed fields stay undecoded bytes); `map_record` turns a record into
    each table's COPY line.
    """

    source: str
    record_id: str
    tables: tuple[TableMapper, ...]
    record_type: type
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decode", msgspec.json.Decoder(self.record_type).decode)

    def decode(self, data: bytes) -> Any:
        """One NDJSON line as a record (ValueError when it is not a JSON object)."""
        try:
            return self._decode(data)  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            raise ValueError(f"not an event object: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None

    def map_record(self, record: Any) -> list[tuple[TableMapper, str | None, str | None]]:
        """Each table's (mapper, COPY line or None, dedup key) for a record; MappingError if bad."""
        try:
            return [(table, *table._fast(record)) for table in self.tables]  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the checked path says precisely what is wrong
            return [(table, *table.checked_line(record)) for table in self.tables]

    def map_event(self, event: dict[str, Any]) -> list[tuple[TableMapper, str | None, str | None]]:
        """`map_record` for an event given as a dict."""
        return self.map_record(self.decode(_encode_json(event)))


def compile_mapping(model: EventMappingFile, path: Path | None = None) -> EventMapping:
    """Compile a validated mapping model into a record type and per-table mappers."""
    attributes: dict[str, tuple[str, Any]] = {}  # source field -> (attribute, decoded type)
    tables = []
    for table, rule in model.tables.items():
        spec = get_table(table)
        compiled = []
        for column in spec.columns:
            if column.name not in rule.columns:
                continue
            column_rule = rule.columns[column.name] or ColumnRule()
            value_type = column_rule.type or _DEFAULT_TYPE[column.type]
            source = column_rule.source or column.name
            decoded = msgspec.Raw if value_type == "json" else Any
            if source in attributes and attributes[source][1] is not decoded:
                decoded = Any  # one field read both as JSON and as a value: decode it
            attributes[source] = (
                attributes.get(source, (record_attribute(source), None))[0],
                decoded,
            )
            compiled.append(
                _CompiledColumn(
                    name=column.name,
                    source=source,
                    cast=_CASTERS[value_type],
                    nulls=frozenset(v for v in column_rule.null_values if _hashable_null(v)),
                    required=column_rule.required or (column.not_null and column.default is None),
                )
            )
        tables.append((spec, rule, compiled))
    record_type = msgspec.defstruct(
        f"{model.source.title()}Record",
        [(attribute, decoded, None) for attribute, decoded in attributes.values()],
        rename={attribute: source for source, (attribute, _) in attributes.items()},
    )
    mappers = []
    for spec, rule, compiled in tables:
        raw_fields = {
            source for source, (_, decoded) in attributes.items() if decoded is msgspec.Raw
        }
        compiled = [
            column
            if column.source in raw_fields or column.cast is not _json
            else _CompiledColumn(
                column.name, column.source, _json_value, column.nulls, column.required
            )
            for column in compiled
        ]
        mappers.append(
            TableMapper(
                spec=spec,
                columns=tuple(c.name for c in compiled),
                compiled=tuple(compiled),
                skip_when_null=rule.skip_when_null,
                first_per_file=rule.first_per_file,
                attributes=tuple(attributes[c.source][0] for c in compiled),
            )
        )
    return EventMapping(model.source, model.record_id, tuple(mappers), record_type, path)


def record_attribute(source: str) -> str:
    """The record attribute holding event field `source` (`$insert_id` → `f__insert_id`)."""
    return "f_" + re.sub(r"\W", "_", source)


def _json_value(value: Any) -> str:
    """A decoded JSON value as an escaped COPY field (for fields decoded for another column)."""
    return json_text(value)


def load_event_mapping(path: Path | str) -> EventMapping:
    """Read, validate and compile a mapping file; MappingFileError names the file and entry."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = MAPPINGS_DIR / path
    model = read_mapping_file(path, EventMappingFile, MappingFileError)
    return compile_mapping(model, path)


def amplitude_mapping() -> EventMapping:
    """The shipped Amplitude mapping (`transform/mappings/amplitude.yaml`)."""
    return load_event_mapping(MAPPINGS_DIR / "amplitude.yaml")


def parse_json_line(data: bytes) -> dict[str, Any]:
    """One NDJSON line as a dict (ValueError when it is not a JSON object)."""
    try:
        event = _decode_json(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if event.__class__ is not dict:
        raise ValueError(f"a line holds a JSON {type(event).__name__}, not an object")
    return event
