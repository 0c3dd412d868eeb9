"""Declarative event → DWH rows mappings (YAML, validated by Pydantic when loaded).

A mapping file names, per target table, which event field fills each column,
which raw values mean NULL, and which column must be present. Loading it
compiles one small function per table that turns an event into a COPY text
line (see `dwh.copy_text`), and one for the whole event that reads each field
once and converts each value once for every table that takes it, so the hot
path does no lookups in the rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec

from dwh_helper.dwh.copy_text import NULL, TEXT, CopyDialect
from dwh_helper.dwh.tables import TableSpec, get_table
from dwh_helper.transform import values
from dwh_helper.transform.deep_fields import drop_deep_fields
from dwh_helper.transform.event_casts import (
    BOUNDS,
    CASTERS,
    NEEDS_ESCAPE,
    UUID_FORM,
    Caster,
    NeedsCheck,
    Unreadable,
    cast_json,
    cast_text,
    json_value_field,
    raw_json,
    raw_json_checked,
)
from dwh_helper.transform.event_mapping_file import (
    DEFAULT_TYPE,
    ColumnRule,
    EventMappingFile,
    MappingFileError,
    TableRule,
    ValueType,
)
from dwh_helper.transform.mapping_file import read_mapping_file
from dwh_helper.transform.values import (
    CheckedRecord,
    InvalidValue,
    OnInvalid,
    RefusedValue,
    Repairs,
    ValueReport,
)

__all__ = [
    "ColumnRule",
    "NeedsCheck",
    "EventMapping",
    "EventMappingFile",
    "MappingError",
    "MappingFileError",
    "TableMapper",
    "TableRule",
    "ValueType",
    "amplitude_mapping",
    "compile_mapping",
    "load_event_mapping",
    "parse_json_line",
]

MAPPINGS_DIR = Path(__file__).with_name("mappings")


class MappingError(RefusedValue):
    """An event cannot be mapped: which column, which value, why."""

    def __init__(self, table: str, column: str, value: Any, reason: str) -> None:
        super().__init__(column, value, reason, table)


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


# Not frozen: `__post_init__` compiles the derived fields below from the declared ones, and
# nothing assigns them afterwards. Hashed by identity: a dict key on the hot path.
@dataclass(eq=False, slots=True)
class TableMapper:
    """One target table: the columns it fills and how a decoded event becomes its COPY line."""

    spec: TableSpec
    columns: tuple[str, ...]
    compiled: tuple[_CompiledColumn, ...]
    skip_when_null: str | None
    first_per_file: bool
    attributes: tuple[str, ...] = ()
    copy_dialect: CopyDialect = TEXT
    null_on_invalid: frozenset[str] = field(init=False)
    _plan: tuple[tuple[Any, ...], ...] = field(init=False, repr=False)
    _values: Callable[[Any], Any] = field(init=False, repr=False)
    _fast: Callable[[Any], tuple[str | None, str | None]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        plan = tuple(
            (
                raw_json if column.cast is cast_json else column.cast,
                column.nulls or None,
                column.name == self.skip_when_null,
                column.required,
                self.first_per_file and column.name == self.spec.key[0],
                column.name,
            )
            for column in self.compiled
        )
        self._plan = plan
        self.null_on_invalid = frozenset(c.name for c in self.compiled if c.on_invalid == "null")
        self._values = attrgetter(*self.attributes)
        self._fast = _generate_line_function(self, plan)

    def line(self, record: Any) -> tuple[str | None, str | None]:
        """(COPY line or None when the event gives no row, key for first-per-file dedup)."""
        try:
            return self._fast(record)
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
        record_values = self._values(record)
        if len(self.attributes) == 1:
            record_values = (record_values,)
        fields: list[str] = []
        append = fields.append
        key: str | None = None
        for value, column, (_cast, nulls, skip, required, is_key, name) in zip(
            record_values,
            self.compiled,
            self._plan,
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
                if isinstance(value, Unreadable):
                    raise InvalidValue(value.reason)
                if column.cast is cast_text:
                    text = values.text(value, repairs)
                elif column.cast is cast_json or column.cast is json_value_field:
                    text = raw_json_checked(value, repairs)
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


def _namespace() -> dict[str, Any]:
    """The names a generated function may use besides its own casts and null sets."""
    return {
        "NULL": NULL,
        "SCALARS": _SCALARS,
        "Invalid": _Invalid,
        "TEXT": cast_text,
        "NEEDS_ESCAPE": NEEDS_ESCAPE,
        "IS_UUID": UUID_FORM.fullmatch,
        "FROMISO": datetime.fromisoformat,
    }


def _column_code(cast: Any, nulls: Any, v: str, name: str) -> tuple[str, str]:
    """(null test, conversion) of one column as expressions over variable `v`; the cast is
    `C{name}` in the namespace, the null set `N{name}`."""
    null_test = f"{v} is None"
    if nulls:
        null_test += f" or ({v}.__class__ in SCALARS and {v} in N{name})"
    if cast is cast_text:
        convert = f"({v} if {v}.__class__ is str and not NEEDS_ESCAPE({v}) else TEXT({v}))"
    elif cast is CASTERS["bigint"] or cast is CASTERS["integer"]:
        bound = BOUNDS["bigint" if cast is CASTERS["bigint"] else "integer"]
        convert = (
            f"(str({v}) if {v}.__class__ is int and {-bound} <= {v} < {bound} else C{name}({v}))"
        )
    elif cast is values.uuid:
        convert = f"({v} if {v}.__class__ is str and IS_UUID({v}) else C{name}({v}))"
    elif cast is values.timestamp:  # Amplitude's own form, checked in C, passed as is
        convert = (
            f"({v} if {v}.__class__ is str and len({v}) == 26 and {v}[10] == ' ' "
            f"and {v}[19] == '.' and {v}[4] == '-' and {v}[7] == '-' and {v}[13] == ':' "
            f"and {v}[16] == ':' and {v}.isascii() and FROMISO({v}) else C{name}({v}))"
        )
    else:
        convert = f"C{name}({v})"
    return null_test, convert


def _generate_line_function(table: TableMapper, plan: tuple) -> Callable[[Any], Any]:
    """Compile one straight-line function for a table: no loop, no per-column dispatch.

    It gives the same result as `checked_line` for every record that `EventMapping.decode`
    let through and raises on any problem, so that the checked path reports it precisely
    (tests/transform/test_fast_path.py compares the two).
    """
    namespace = _namespace()
    body = ["def line(r):"]
    fields = []
    key = "None"
    for index, (attribute, (cast, nulls, skip, required, is_key, _name)) in enumerate(
        zip(table.attributes, plan, strict=True)
    ):
        namespace[f"C{index}"] = cast
        namespace[f"N{index}"] = nulls
        body.append(f"    v = r.{attribute}")
        null_test, convert = _column_code(cast, nulls, "v", str(index))
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


def _generate_record_function(tables: tuple[TableMapper, ...]) -> Callable[[Any], Any]:
    """Compile one straight-line function for a whole record: every table's (mapper, COPY
    line, dedup key), each field read once and each value converted once however many tables
    take it (an event's UUID is checked once, not five times).

    The same result as calling each table's line function in turn (and so as the checked
    path, which tests/transform/test_fast_path.py compares): a table that may skip the record
    (`skip_when_null`) keeps its own function, called from here.
    """
    namespace = _namespace()
    body = ["def record(r):"]
    variables: dict[str, str] = {}
    for table in tables:
        for attribute in table.attributes:
            if attribute not in variables:
                variables[attribute] = f"v{len(variables)}"
                body.append(f"    {variables[attribute]} = r.{attribute}")
    converted: dict[tuple[Any, ...], str] = {}
    results = []
    for number, table in enumerate(tables):
        namespace[f"T{number}"] = table
        if table.skip_when_null is not None:
            namespace[f"F{number}"] = table._fast
            body.append(f"    l{number}, k{number} = F{number}(r)")
            results.append(f"(T{number}, l{number}, k{number})")
            continue
        fields = []
        key = "None"
        for index, (attribute, (cast, nulls, _skip, required, is_key, _name)) in enumerate(
            zip(table.attributes, table._plan, strict=True)
        ):
            name = f"{number}_{index}"
            memo = (attribute, cast, nulls, required)
            if not required and not nulls and (attribute, cast, nulls, True) in converted:
                memo = (attribute, cast, nulls, True)  # checked non-null already: same value
            if memo not in converted:
                namespace[f"C{name}"] = cast
                namespace[f"N{name}"] = nulls
                null_test, convert = _column_code(cast, nulls, variables[attribute], name)
                if required:
                    body += [f"    if {null_test}:", "        raise Invalid"]
                    body.append(f"    a{name} = {convert}")
                else:
                    body.append(f"    a{name} = NULL if {null_test} else {convert}")
                converted[memo] = f"a{name}"
            fields.append(f"{{{converted[memo]}}}")
            if is_key:
                key = converted[memo]
        tab = "\\t"
        results.append(f'(T{number}, f"{tab.join(fields)}", {key})')
    body.append(f"    return [{', '.join(results)}]")
    exec("\n".join(body), namespace)  # noqa: S102 - source built above from validated names
    return namespace["record"]


class _Invalid(Exception):
    """Raised by a generated line function; the checked path then names the problem."""


_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


# Not frozen: `__post_init__` compiles the decoder and lookups below from the declared fields,
# and nothing assigns them afterwards. Compared and hashed by identity, like its mappers.
@dataclass(eq=False, slots=True)
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
    _decode: Callable[[bytes], Any] = field(init=False, repr=False)
    _fields: tuple[tuple[str, str], ...] = field(init=False, repr=False)
    _id_attribute: str = field(init=False, repr=False)
    _record: Callable[[Any], list[Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._decode = msgspec.json.Decoder(self.record_type).decode
        self._record = _generate_record_function(self.tables)
        fields = msgspec.structs.fields(self.record_type)
        self._fields = tuple((f.encode_name, f.name) for f in fields)
        self._id_attribute = record_attribute(self.record_id)

    def decode(self, data: bytes) -> Any:
        """One NDJSON line as a record; ValueError when it is not a JSON object."""
        try:
            return self._decode(data)
        except msgspec.ValidationError as exc:
            raise ValueError(f"not an event object: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("JSON nested too deep for the fast decoder") from None

    def map_record(self, record: Any) -> list[tuple[TableMapper, str | None, str | None]]:
        """Each table's (mapper, COPY line or None, dedup key) for a record (fast path: raises
        on any problem, the checked path then says what it is)."""
        return self._record(record)

    def map_checked(self, data: bytes) -> CheckedRecord:
        """The checked path for one raw line: decode (also lines msgspec refuses: lone
        surrogates, bytes that are not UTF-8, deep nesting, huge numbers), then map value by
        value with the column policy. ValueError (MappingError naming the column) rejects."""
        record = self.checked_decode(data)
        reports: list[ValueReport] = []
        repairs = Repairs()
        lines = [(table, *table.checked_line(record, reports, repairs)) for table in self.tables]
        record_id = getattr(record, self._id_attribute, None)
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
            return self._decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            pass
        except msgspec.ValidationError as exc:
            if b"out of range" not in str(exc).encode():
                raise ValueError(f"not an event object: {exc}") from None
        text = bytes(data).decode("utf-8", "surrogateescape")
        text, unreadable = drop_deep_fields(text)
        try:
            event = values.parse_json(text)
        except values.InvalidValue as exc:
            raise ValueError(exc.reason) from None
        if event.__class__ is not dict:
            raise ValueError(f"a line holds {type(event).__name__}, not an event object")
        kwargs = {}
        for source, attribute in self._fields:
            if source in unreadable:
                kwargs[attribute] = Unreadable(unreadable[source])
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
            value_type = column_rule.type or DEFAULT_TYPE[column.type]
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
                    cast=CASTERS[value_type],
                    nulls=frozenset(v for v in column_rule.null_values if _hashable_null(v)),
                    required=required,
                    on_invalid=column_rule.policy(default_on_invalid(spec, column.name, required)),
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
            if column.source in raw_fields or column.cast is not cast_json
            else _CompiledColumn(
                column.name,
                column.source,
                json_value_field,
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
