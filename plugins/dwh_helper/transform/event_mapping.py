"""Declarative event → DWH rows mappings (YAML, validated by Pydantic when loaded).

A mapping file names, per target table, which event field fills each column,
which raw values mean NULL, and which column must be present. Loading it
compiles one small function per table that turns an event into a COPY text
line (see `dwh.copy_text`), so the hot path does no lookups in the rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.dwh.copy_text import NULL, TEXT, CopyDialect, escape
from dwh_helper.dwh.tables import TableSpec, get_table
from dwh_helper.transform import values
from dwh_helper.transform.mapping_file import read_mapping_file
from dwh_helper.transform.values import (
    CheckedRecord,
    InvalidValue,
    OnInvalid,
    RefusedValue,
    Repairs,
    ValueReport,
    yaml_null_policy,
)

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


class MappingError(RefusedValue):
    """An event cannot be mapped: which column, which value, why."""

    def __init__(self, table: str, column: str, value: Any, reason: str) -> None:
        super().__init__(column, value, reason, table)


class MappingFileError(ValueError):
    """A mapping file is invalid; the message names the file and the entry."""


class ColumnRule(BaseModel):
    """How one column is filled: the event field, its type, the raw values meaning NULL."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(None, alias="from", description="event field (default: column)")
    type: ValueType | None = None
    null_values: list[str | int | float | bool] = Field(default_factory=list)
    required: bool = False
    on_invalid: OnInvalid | None = Field(
        None,
        description="what an invalid value costs: reject the record, or store NULL and report "
        "it (default: reject for required and key columns, null for the others)",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_null(cls, data: Any) -> Any:
        """`on_invalid: null` in YAML reads as None: it means the policy `null`."""
        return yaml_null_policy(data)


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


# -- casters: raw JSON value -> COPY text field (or InvalidValue), from the value layer ------

Caster = Callable[[Any], str]


def _text(value: Any) -> str:
    """Fast path text: NeedsCheck for a NUL (the checked path removes and counts it)."""
    if value.__class__ is str:
        if "\x00" in value:
            raise NeedsCheck("a NUL in a text value")
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return escape(value)
        return value
    return _unrepaired(values.text, value)


def _json(value: Any) -> str:
    return _unrepaired(values.json_value, value)


def _unrepaired(cast: Callable[..., str], value: Any) -> str:
    """`cast(value)`, or NeedsCheck when it had to repair the value (to be counted)."""
    repairs = Repairs()
    text = cast(value, repairs)
    if repairs.count:
        raise NeedsCheck("a value to repair")
    return text


def _raw_json_checked(value: Any, repairs: Repairs | None = None) -> str:
    """A JSON field of the checked path: undecoded text checked as is, or a decoded value."""
    if isinstance(value, msgspec.Raw):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("not valid UTF-8") from None
        if text == "null":
            return NULL
        return values.json_text(text, repairs)
    return values.json_value(value, repairs)


_CASTERS: dict[str, Caster] = {
    "text": _text,
    "uuid": values.uuid,
    "bigint": values.bigint,
    "integer": values.int4,
    "double": values.double,
    "boolean": values.boolean,
    "timestamp": values.timestamp,
    "json": _json,
    "inet": values.inet,
}
_BOUNDS = {"bigint": 2**63, "integer": 2**31}
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


@dataclass(frozen=True)
class _CompiledColumn:
    name: str
    source: str
    cast: Caster
    nulls: frozenset[Any]
    required: bool
    on_invalid: OnInvalid = "null"


_SCALARS = frozenset({str, int, float, bool})


def _hashable_null(value: Any) -> bool:
    return value is None or value.__class__ in _SCALARS


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
        object.__setattr__(
            self,
            "null_on_invalid",
            frozenset(c.name for c in self.compiled if c.on_invalid == "null"),
        )
        object.__setattr__(self, "_values", attrgetter(*self.attributes))
        object.__setattr__(self, "_fast", _generate_line_function(self, plan))

    def line(self, record: Any) -> tuple[str | None, str | None]:
        """(COPY line or None when the event gives no row, key for first-per-file dedup)."""
        try:
            return self._fast(record)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the checked path below says precisely what is wrong
            return self.checked_line(record)

    def checked_line(
        self,
        record: Any,
        reports: list[ValueReport] | None = None,
        repairs: Repairs | None = None,
    ) -> tuple[str | None, str | None]:
        """`line`, column by column through the value layer: NUL removed (counted in
        `repairs`); an invalid value of an `on_invalid: null` column stored NULL and added to
        `reports`; MappingError (naming the column and value) for a record to reject."""
        record_values = self._values(record)  # type: ignore[attr-defined]
        if len(self.attributes) == 1:
            record_values = (record_values,)
        fields: list[str] = []
        append = fields.append
        key: str | None = None
        for value, column, (_cast, nulls, skip, required, is_key, name) in zip(
            record_values,
            self.compiled,
            self._plan,  # type: ignore[attr-defined]
            strict=True,
        ):
            if value is None or (nulls and value.__class__ in _SCALARS and value in nulls):
                if skip:
                    return None, None
                if required:
                    raise MappingError(self.spec.name, name, value, "missing")
                append(NULL)
                continue
            try:
                if isinstance(value, _Unreadable):
                    raise InvalidValue(value.reason)
                if column.cast is _text:
                    text = values.text(value, repairs)
                elif column.cast is _json or column.cast is _json_value:
                    text = _raw_json_checked(value, repairs)
                else:
                    text = column.cast(value)
            except InvalidValue as invalid:
                if column.on_invalid == "reject":
                    raise MappingError(self.spec.name, name, value, invalid.reason) from None
                if reports is not None:
                    reports.append(ValueReport(self.spec.name, name, value, invalid.reason))
                if skip:
                    return None, None
                if required:
                    raise MappingError(self.spec.name, name, value, invalid.reason) from None
                append(NULL)
                continue
            if is_key:
                key = text
            append(text)
        return "\t".join(fields), key


def _raw_json(value: Any) -> str:
    """A JSON value kept undecoded (`msgspec.Raw`) as an escaped COPY field (fast path);
    NeedsCheck for a NUL escape, which only the checked path may remove and count."""
    text = bytes(value).decode()
    if text == "null":
        return NULL
    if "\\" in text:
        if "\\u0000" in text:
            raise NeedsCheck("a NUL in JSON")
        return text.translate(_ESCAPES)
    return text


class _Unreadable:
    """A field the checked decoder could not read (nested too deep): refused per value."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\x00]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _generate_line_function(table: TableMapper, plan: tuple) -> Callable[[Any], Any]:
    """Compile one straight-line function for a table: no loop, no per-column dispatch.

    It gives the same result as `checked_line` for every record that `EventMapping.decode`
    let through and raises on any problem, so that the checked path reports it precisely
    (tests/transform/test_fast_path.py compares the two).
    """
    namespace: dict[str, Any] = {
        "NULL": NULL,
        "SCALARS": _SCALARS,
        "Invalid": _Invalid,
        "TEXT": _text,
        "NEEDS_ESCAPE": _NEEDS_ESCAPE,
        "IS_UUID": _UUID.fullmatch,
        "FROMISO": datetime.fromisoformat,
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
        elif cast is values.uuid:
            convert = f"(v if v.__class__ is str and IS_UUID(v) else C{index}(v))"
        elif cast is values.timestamp:  # Amplitude's own form, checked in C, passed as is
            convert = (
                f"(v if v.__class__ is str and len(v) == 26 and v[10] == ' ' and v[19] == '.' "
                f"and v[4] == '-' and v[7] == '-' and v[13] == ':' and v[16] == ':' "
                f"and v.isascii() and FROMISO(v) else C{index}(v))"
            )
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


class _Invalid(Exception):
    """Raised by a generated line function; the checked path then names the problem."""


class NeedsCheck(ValueError):
    """The fast path declines a record: the checked path must map it (never a reject itself)."""


_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class EventMapping:
    """A loaded, validated mapping: its source, record id field and table mappers in load order.

    `decode` turns one NDJSON line into a record holding just the mapped fields
    (JSON-typed fields stay undecoded bytes); `map_record` turns a record into
    each table's COPY line. Both are the fast path and raise on anything unusual;
    `map_checked` is the checked path (the value layer, value by value, with the
    column policy) that the loader falls back to.
    """

    source: str
    record_id: str
    tables: tuple[TableMapper, ...]
    record_type: type
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decode", msgspec.json.Decoder(self.record_type).decode)
        fields = msgspec.structs.fields(self.record_type)
        object.__setattr__(self, "_fields", tuple((f.encode_name, f.name) for f in fields))
        object.__setattr__(self, "_id_attribute", record_attribute(self.record_id))

    def decode(self, data: bytes) -> Any:
        """One NDJSON line as a record; ValueError when it is not a JSON object."""
        try:
            return self._decode(data)  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            raise ValueError(f"not an event object: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("JSON nested too deep for the fast decoder") from None

    def map_record(self, record: Any) -> list[tuple[TableMapper, str | None, str | None]]:
        """Each table's (mapper, COPY line or None, dedup key) for a record (fast path: raises
        on any problem, the checked path then says what it is)."""
        return [(table, *table._fast(record)) for table in self.tables]  # type: ignore[attr-defined]

    def map_checked(self, data: bytes) -> CheckedRecord:
        """The checked path for one raw line: decode (also lines msgspec refuses: lone
        surrogates, bytes that are not UTF-8, deep nesting, huge numbers), then map value by
        value with the column policy. ValueError (MappingError naming the column) rejects."""
        record = self.checked_decode(data)
        reports: list[ValueReport] = []
        repairs = Repairs()
        lines = [(table, *table.checked_line(record, reports, repairs)) for table in self.tables]
        record_id = getattr(record, self._id_attribute, None)  # type: ignore[attr-defined]
        return CheckedRecord(
            record,
            lines,
            reports,
            repairs.count,
            None if record_id is None else values.shown(record_id),
        )

    def checked_decode(self, data: bytes) -> Any:
        """A raw line as a record, reading what the fast decoder refuses; ValueError if the
        line is not a JSON object at all."""
        try:
            return self._decode(data)  # type: ignore[attr-defined]
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            pass
        except msgspec.ValidationError as exc:
            if b"out of range" not in str(exc).encode():
                raise ValueError(f"not an event object: {exc}") from None
        text = bytes(data).decode("utf-8", "surrogateescape")
        text, unreadable = values.drop_deep_fields(text)
        try:
            event = values.parse_json(text)
        except values.InvalidValue as exc:
            raise ValueError(exc.reason) from None
        if event.__class__ is not dict:
            raise ValueError(f"a line holds {type(event).__name__}, not an event object")
        kwargs = {}
        for source, attribute in self._fields:  # type: ignore[attr-defined]
            if source in unreadable:
                kwargs[attribute] = _Unreadable(unreadable[source])
            elif source in event:
                kwargs[attribute] = event[source]
        return self.record_type(**kwargs)

    def map_event(self, event: dict[str, Any]) -> list[tuple[TableMapper, str | None, str | None]]:
        """Each table's lines for an event given as a dict (fast path, else the checked one)."""
        data = _encode_json(event)
        try:
            return self.map_record(self.decode(data))
        except Exception:  # noqa: BLE001 - the checked path says precisely what is wrong
            return self.map_checked(data).lines


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
            required = column_rule.required or (column.not_null and column.default is None)
            compiled.append(
                _CompiledColumn(
                    name=column.name,
                    source=source,
                    cast=_CASTERS[value_type],
                    nulls=frozenset(v for v in column_rule.null_values if _hashable_null(v)),
                    required=required,
                    on_invalid=column_rule.on_invalid
                    or default_on_invalid(spec, column.name, required),
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
                column.name,
                column.source,
                _json_value,
                column.nulls,
                column.required,
                column.on_invalid,
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
    return _unrepaired(values.json_value, value)


def default_on_invalid(spec: TableSpec, column: str, required: bool) -> OnInvalid:
    """What an invalid value costs when the mapping does not say: the record for a required or
    key column (`uuid`, `event_time`, ...), a NULL (reported) for any other."""
    return "reject" if required or column in spec.key else "null"


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
