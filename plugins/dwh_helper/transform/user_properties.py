"""Turn one record's raw user properties into a permanent row and a changeable row.

A record is a `tmp_user_properties` row (`uuid`, `user_properties_json`,
`language`, `session_id`, `start_version`, `event_time`) or a raw Amplitude
event (the same fields, with `user_properties`). The rules come from the
mapping (`field_mappings.yaml`); this module only applies them, and fast: each
rule is compiled once per mapping into a small converter.

Values follow the value layer (`transform.values`), so a value accepted here is one
PostgreSQL accepts unchanged: a NUL is removed from text and counted as a repair; integers
are ASCII digits with an optional sign, range checked; `event_time` takes exactly the
timestamp forms the loaders take. What an invalid value costs is the entry's `on_invalid`:
`reject` (default for `ehr_id`, and always for `uuid` and `event_time`) rejects the record,
`null` (default for every other column) stores NULL and reports the value.
"""

from __future__ import annotations

import json
import math
import re
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from dwh_helper.dwh.tables import (
    CHANGEABLE_USER_PROPERTIES,
    PERMANENT_USER_PROPERTIES,
    TableSpec,
)
from dwh_helper.transform import values
from dwh_helper.transform.field_mapping import FieldMappings, FieldRule, load_field_mappings


@dataclass(frozen=True)
class FieldError:
    """A value that could not be converted: the key that held it, the value, and why (the
    reason starts with the column); `table` and `column` say where it was going."""

    key: str
    value: Any
    reason: str
    column: str | None = field(default=None, compare=False)
    table: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the value as given when JSON can hold it, else its repr)."""
        value = self.value
        if not isinstance(value, str | int | float | bool | type(None) | dict | list):
            value = repr(value)
        return {"key": self.key, "value": value, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.key}={_short(self.value)}: {self.reason}"


@dataclass
class TransformResult:
    """The rows one record gives, or its errors (then both rows are None), its unknown keys,
    the values stored NULL (`reports`, the record still loads) and how many values had a NUL
    removed (`repairs`)."""

    permanent: dict[str, Any] | None
    changeable: dict[str, Any] | None
    errors: list[FieldError] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    reports: list[FieldError] = field(default_factory=list)
    repairs: int = 0

    @property
    def ok(self) -> bool:
        """True when the record converted without an error."""
        return not self.errors


_Invalid = values.InvalidValue
"""A value a converter refuses; the message is the reason."""


def _short(value: Any, limit: int = 80) -> str:
    return values.shown(value if not isinstance(value, str) else repr(value), limit)


@dataclass(frozen=True)
class _Rule:
    column: str
    table: str
    keys: tuple[str, ...]
    from_record: bool
    nulls: dict[type, frozenset[Any]]
    convert: Callable[[Any, values.Repairs], Any]
    rejects: bool  # on_invalid: reject (else the column is stored NULL and the value reported)


def _string_converter(rule: FieldRule) -> Callable[[Any, values.Repairs], Any]:
    lowercase = rule.lowercase
    regex = re.compile(rule.extract_regex) if rule.extract_regex else None
    value_map = dict(rule.value_map)
    clean = values.clean_text

    def convert(value: Any, repairs: values.Repairs) -> Any:
        kind = type(value)
        if kind is str:
            text = clean(value, repairs)
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is int:
            text = str(value)
        elif kind is float:
            if not math.isfinite(value):
                raise _Invalid("not a finite number")
            text = str(value)
        else:
            raise _Invalid(f"expected a string, got {values.json_kind(value)}")
        if lowercase:
            text = text.lower()
        if regex is not None:
            match = regex.search(text)
            if match is None:
                raise _Invalid(f"no match for extract_regex {regex.pattern!r}")
            text = match.group(regex.groups)
        if value_map:
            return value_map.get(text, text)
        return text

    return convert


def _integer_converter(rule: FieldRule, sql_type: str) -> Callable[[Any, values.Repairs], Any]:
    regex = re.compile(rule.extract_regex) if rule.extract_regex else None
    value_map = dict(rule.value_map)
    kind_name = sql_type if sql_type in values.INT_RANGES else "bigint"
    low, high = values.INT_RANGES[kind_name]
    number_of = values.integer_number

    def convert(value: Any, repairs: values.Repairs) -> Any:
        kind = type(value)
        if kind is str and value_map and value in value_map:
            value = value_map[value]
            if value is None:
                return None
            kind = type(value)
        if kind is int:
            if not low <= value <= high:
                raise _Invalid(f"out of range for {kind_name} ({low}..{high})")
            return value
        if kind is str and regex is not None:
            match = regex.search(value)
            if match is None:
                raise _Invalid(f"no match for extract_regex {regex.pattern!r}")
            text = match.group(regex.groups)
            try:
                return number_of(text, kind_name)
            except _Invalid as exc:
                raise _Invalid(f"{values.shown(text, 40)!r} (extracted): {exc.reason}") from None
        return number_of(value, kind_name)

    return convert


def _boolean_converter(rule: FieldRule) -> Callable[[Any, values.Repairs], Any]:
    table: dict[type, dict[Any, bool]] = {}
    for listed_values, meaning in ((rule.false_values, False), (rule.true_values, True)):
        for value in listed_values:
            if value is not None:
                table.setdefault(type(value), {})[value] = meaning
    listed = f"true: {rule.true_values}, false: {rule.false_values}"

    def convert(value: Any, repairs: values.Repairs) -> Any:
        kind = type(value)
        if kind is bool:
            return value
        same_type = table.get(kind)
        if same_type is not None:
            meaning = same_type.get(value)
            if meaning is not None:
                return meaning
        raise _Invalid(f"not a known boolean value ({listed})")

    return convert


def _nulls_by_type(values: list[Any]) -> dict[type, frozenset[Any]]:
    """Null values grouped by exact type, so that 1, True and "1" stay distinct."""
    grouped: dict[type, set[Any]] = {}
    for value in values:
        if value is not None:
            grouped.setdefault(type(value), set()).add(value)
    return {kind: frozenset(members) for kind, members in grouped.items()}


def _compile_rule(rule: FieldRule, defaults: list[Any], spec: TableSpec | None) -> _Rule:
    """`spec` None: the ehr_id rule (a bigint, the record's key: rejects by default)."""
    sql_type = spec.column(rule.column).type if spec is not None else "bigint"
    if rule.type == "string":
        convert = _string_converter(rule)
    elif rule.type == "integer":
        convert = _integer_converter(rule, sql_type)
    else:
        convert = _boolean_converter(rule)
    return _Rule(
        column=rule.column,
        table=(spec or CHANGEABLE_USER_PROPERTIES).name,
        keys=tuple(rule.keys),
        from_record=rule.origin == "record",
        nulls=_nulls_by_type([*defaults, *rule.null_values]),
        convert=convert,
        rejects=rule.policy("reject" if spec is None else "null") == "reject",
    )


@dataclass(frozen=True)
class CompiledMapping:
    """A mapping turned into converters, built once per mapping object."""

    ehr_id: _Rule
    permanent: tuple[_Rule, ...]
    changeable: tuple[_Rule, ...]
    known_keys: frozenset[str]
    # Split by origin: user_properties rules depend on the properties object only.
    ehr_and_changeable_props: tuple[_Rule, ...]
    changeable_record: tuple[_Rule, ...]
    permanent_props: tuple[_Rule, ...]
    permanent_record: tuple[_Rule, ...]


_compiled_cache: dict[int, tuple[FieldMappings, CompiledMapping]] = {}


def compile_mapping(mapping: FieldMappings) -> CompiledMapping:
    """The compiled form of a mapping (cached per mapping object)."""
    cached = _compiled_cache.get(id(mapping))
    if cached is not None and cached[0] is mapping:
        return cached[1]
    defaults = list(mapping.null_values)
    ehr_id = _compile_rule(mapping.ehr_id, defaults, None)
    changeable = tuple(
        _compile_rule(rule, defaults, CHANGEABLE_USER_PROPERTIES) for rule in mapping.changeable
    )
    permanent = tuple(
        _compile_rule(rule, defaults, PERMANENT_USER_PROPERTIES) for rule in mapping.permanent
    )
    compiled = CompiledMapping(
        ehr_id=ehr_id,
        permanent=permanent,
        changeable=changeable,
        known_keys=mapping.known_keys(),
        ehr_and_changeable_props=(ehr_id, *(r for r in changeable if not r.from_record)),
        changeable_record=tuple(r for r in changeable if r.from_record),
        permanent_props=tuple(r for r in permanent if not r.from_record),
        permanent_record=tuple(r for r in permanent if r.from_record),
    )
    if len(_compiled_cache) > 32:
        _compiled_cache.clear()
    _compiled_cache[id(mapping)] = (mapping, compiled)
    return compiled


@lru_cache(maxsize=1)
def default_mapping() -> FieldMappings:
    """The shipped mapping, loaded once."""
    return load_field_mappings()


def _fill(
    rules: tuple[_Rule, ...],
    props: Mapping[str, Any],
    record: Mapping[str, Any],
    target: dict[str, Any],
    errors: list[FieldError],
    reports: list[FieldError],
    repairs: values.Repairs,
) -> None:
    """Set each rule's column to the first non-null value of its keys, converted (else None).

    An invalid value goes to `errors` (the rule rejects the record) or to `reports` (the
    column stays None)."""
    for rule in rules:
        source = record if rule.from_record else props
        nulls = rule.nulls
        result = None
        for key in rule.keys:
            value = source.get(key)
            if value is None:
                continue
            same_type_nulls = nulls.get(type(value))
            if same_type_nulls is not None and value in same_type_nulls:
                continue
            try:
                result = rule.convert(value, repairs)
            except _Invalid as exc:
                error = FieldError(key, value, f"{rule.column}: {exc}", rule.column, rule.table)
                (errors if rule.rejects else reports).append(error)
                result = None
                break
            if result is not None:
                break
        target[rule.column] = result


def _as_properties(raw: Any, key: str, errors: list[FieldError]) -> Mapping[str, Any]:
    """The user_properties object from a dict, JSON text or None."""
    if raw is None:
        return {}
    props = raw
    if isinstance(props, str | bytes):
        try:
            props = json.loads(props)
        except RecursionError:
            errors.append(FieldError(key, raw, f"JSON nested too deep to read ({key})"))
            return {}
        except ValueError as exc:
            errors.append(FieldError(key, raw, f"not valid JSON: {exc}"))
            return {}
    if not isinstance(props, dict):
        errors.append(
            FieldError(key, props, f"expected a JSON object, got {values.json_kind(props)}")
        )
        return {}
    return props


def parse_event_time(value: Any) -> datetime:
    """A record's event_time as a naive UTC datetime: a datetime, or a string in exactly the
    forms the loaders take (`values.timestamp`: 'YYYY-MM-DD HH:MM:SS[.ffffff]', ISO 8601 with
    T, Z or an offset)."""
    if value.__class__ is datetime:
        return values.utc_naive(value)
    if value is None:
        raise _Invalid("missing")
    if isinstance(value, str | datetime):
        return values.timestamp_value(value)
    raise _Invalid(f"expected a timestamp, got {values.json_kind(value)}")


def _record_uuid(value: Any) -> uuid_module.UUID:
    if value.__class__ is uuid_module.UUID:
        return value
    if value is None:
        raise _Invalid("missing")
    if isinstance(value, str) and values.is_uuid(value):
        return uuid_module.UUID(value)
    raise _Invalid("not a uuid")


_PERMANENT_TEMPLATE = dict.fromkeys(PERMANENT_USER_PROPERTIES.column_names)
_CHANGEABLE_TEMPLATE = dict.fromkeys(CHANGEABLE_USER_PROPERTIES.column_names)
_NOTHING: Mapping[str, Any] = {}
_CHANGEABLE_NAME = CHANGEABLE_USER_PROPERTIES.name


@dataclass(frozen=True)
class PropertiesResult:
    """What a user_properties object gives on its own: the same for every record carrying it."""

    permanent: dict[str, Any] | None
    changeable: dict[str, Any]
    errors: tuple[FieldError, ...]
    unknown_keys: tuple[str, ...]
    reports: tuple[FieldError, ...] = ()
    repairs: int = 0


def transform_properties(
    raw: Any,
    mapping: FieldMappings | None = None,
    strict: bool = False,
    key: str = "user_properties",
) -> PropertiesResult:
    """Apply the user_properties rules to one properties object (a dict, JSON text or None).

    The result does not depend on the record, so a caller may reuse it for
    every record carrying the same properties (see `complete_record`).
    """
    compiled = compile_mapping(mapping if mapping is not None else default_mapping())
    errors: list[FieldError] = []
    reports: list[FieldError] = []
    repairs = values.Repairs()
    props = _as_properties(raw, key, errors)
    changeable = _CHANGEABLE_TEMPLATE.copy()
    _fill(compiled.ehr_and_changeable_props, props, _NOTHING, changeable, errors, reports, repairs)
    ehr_id = changeable["ehr_id"]
    permanent = None
    if ehr_id is not None:
        permanent = _PERMANENT_TEMPLATE.copy()
        _fill(compiled.permanent_props, props, _NOTHING, permanent, errors, reports, repairs)
        permanent["ehr_id"] = ehr_id
    known = compiled.known_keys
    unknown = tuple(name for name in props if name not in known)
    if strict:
        errors.extend(
            FieldError(name, props[name], "key is not in the field mapping (strict mode)")
            for name in unknown
        )
    return PropertiesResult(
        permanent, changeable, tuple(errors), unknown, tuple(reports), repairs.count
    )


def complete_record(
    record: Mapping[str, Any], properties: PropertiesResult, mapping: FieldMappings | None = None
) -> TransformResult:
    """Add the record's own fields (uuid, event_time, record rules) to its properties' result."""
    compiled = compile_mapping(mapping if mapping is not None else default_mapping())
    errors = list(properties.errors)
    reports = list(properties.reports)
    repairs = values.Repairs()
    try:
        record_id = _record_uuid(record.get("uuid"))
    except _Invalid as exc:
        errors.append(
            FieldError("uuid", record.get("uuid"), f"uuid: {exc}", "uuid", _CHANGEABLE_NAME)
        )
        record_id = None
    try:
        event_time = parse_event_time(record.get("event_time"))
    except _Invalid as exc:
        value = record.get("event_time")
        errors.append(
            FieldError("event_time", value, f"event_time: {exc}", "event_time", _CHANGEABLE_NAME)
        )
        event_time = None
    changeable = properties.changeable.copy()
    _fill(compiled.changeable_record, _NOTHING, record, changeable, errors, reports, repairs)
    permanent = properties.permanent
    if permanent is not None:
        permanent = permanent.copy()
        if compiled.permanent_record:
            _fill(compiled.permanent_record, _NOTHING, record, permanent, errors, reports, repairs)
    unknown = list(properties.unknown_keys)
    if errors:
        return TransformResult(None, None, errors, unknown)
    changeable["uuid"] = record_id
    changeable["event_time"] = event_time
    if permanent is not None:
        permanent["first_login_at"] = event_time
    return TransformResult(
        permanent, changeable, errors, unknown, reports, properties.repairs + repairs.count
    )


def transform_record(
    record: Mapping[str, Any], mapping: FieldMappings | None = None, strict: bool = False
) -> TransformResult:
    """Map one record to (permanent row | None, changeable row | None, errors, unknown keys).

    No person id → no permanent row (the changeable row carries a null
    ehr_id). Any error → both rows are None. Keys the mapping neither reads nor
    ignores are listed in `unknown_keys`; with `strict` they are errors too.
    """
    key = "user_properties_json" if "user_properties_json" in record else "user_properties"
    properties = transform_properties(record.get(key), mapping, strict, key=key)
    return complete_record(record, properties, mapping)
