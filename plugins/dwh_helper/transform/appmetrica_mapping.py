"""The declarative AppMetrica mapping: per Logs API resource its table, fields and identity.

`load_appmetrica_mapping()` reads `transform/mappings/appmetrica.yaml`, validates it with
Pydantic against the `appmetrica` table specs, and compiles it. For one raw file,
`mapping.resource(name).formatter(application_id, present_fields)` gives a `RowFormatter`
that turns a raw record (all strings, as the Logs API sends them) into one COPY text line
in a single pass: each value checked and cast, an empty string as NULL, and `row_uuid`
computed exactly as `dwh.appmetrica_schema.row_uuid` computes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dwh_helper.dwh.appmetrica_schema import APPMETRICA_TABLES, ROW_UUID_NAMESPACE
from dwh_helper.dwh.copy_text import NULL, escape
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.sources.appmetrica_parse import CastError, field_text
from dwh_helper.transform.mapping_file import read_mapping_file

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
_LOADER_COLUMNS = ("row_uuid", "application_id")
TAB_ESCAPE = "\\t"  # a tab as written inside generated source


class AppMetricaMappingError(ValueError):
    """The AppMetrica mapping file is invalid; the message names the file and the entry."""


class ResourceRule(BaseModel):
    """One Logs API resource: its table in schema appmetrica, identity fields, fields and kinds."""

    model_config = ConfigDict(extra="forbid")

    table: str
    identity: list[str] = Field(min_length=1, description="fields that identify a row")
    fields: dict[str, FieldKind | None] = Field(min_length=1, description="field -> kind")


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
            for name, kind in rule.fields.items():
                if name in _LOADER_COLUMNS:
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


# -- casts: a non-empty raw string -> COPY text (ValueError with the reason) --------------------

_EPOCH = date(1970, 1, 1)
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31 23:59:59
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_BOOLS = {"true": "t", "1": "t", "yes": "t", "false": "f", "0": "f", "no": "f"}


def _bigint(raw: str) -> str:
    try:
        number = int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError("out of range for a signed 64-bit integer (bigint)")
    return str(number)


def _uint64(raw: str) -> str:
    try:
        number = int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None
    if not 0 <= number <= _UINT64_MAX:
        raise ValueError("out of range for an unsigned 64-bit integer")
    return str(number)


def _datetime(raw: str) -> str:
    if len(raw) == 19 and raw[10] == " ":
        try:
            datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return raw
    raise ValueError("expected 'YYYY-MM-DD hh:mm:ss'")


def _bool(raw: str) -> str:
    try:
        return _BOOLS[raw.lower()]
    except KeyError:
        raise ValueError("expected true/false or 1/0") from None


class _Float:
    """A JSON float msgspec would write unlike Python's json (exponents, inf): kept as text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __float__(self) -> float:
        return float(self.text)


def _json_float(text: str) -> float | _Float:
    value = float(text)
    # In this range msgspec writes a float exactly as json.dumps does (checked on 10^6 values).
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        return value
    return _Float(text)


_decode_json = msgspec.json.Decoder(float_hook=_json_float).decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def canonical_json(raw: str) -> str:
    """A JSON text with sorted keys, no spaces and UTF-8 kept (as `json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)` writes it); ValueError when it is not JSON."""
    try:
        value = _decode_json(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"invalid JSON ({exc})") from None
    try:
        return _encode_sorted(value).decode()
    except TypeError:  # a float msgspec would write differently: json.dumps it
        pass
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=float,
        )
    except ValueError:
        raise ValueError("a number out of range for JSON (infinite)") from None


_HOURS_MINUTES = tuple(f"{minute // 60:02d}:{minute % 60:02d}:" for minute in range(1440))
_SECONDS = tuple(f"{second:02d}+00" for second in range(60))


class _TimestampFormat:
    """Unix seconds → `YYYY-MM-DD hh:mm:ss+00` (timestamptz input), with a bounded day cache."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def __call__(self, raw: str) -> str:
        try:
            seconds = int(raw)
        except ValueError:
            raise ValueError("expected Unix seconds (an integer)") from None
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            raise ValueError("Unix seconds out of range")
        day, rest = divmod(seconds, 86400)
        text = self._days.get(day)
        if text is None:
            if len(self._days) > 4096:
                self._days.clear()
            text = self._days[day] = (_EPOCH + timedelta(days=day)).isoformat() + " "
        return text + _HOURS_MINUTES[rest // 60] + _SECONDS[rest % 60]


# How a typed field's value enters the row's identity (as `appmetrica_schema._canonical` writes
# the typed value): its cast text (integers, canonical JSON), Unix seconds as an integer, the
# raw text, or a boolean as true/false.
_FROM_CAST, _FROM_SECONDS, _FROM_RAW, _FROM_BOOL, _FROM_TEXT, _ABSENT = range(6)
_IDENTITY_SOURCE = {
    "timestamp": _FROM_SECONDS,
    "bigint": _FROM_CAST,
    "uint64": _FROM_CAST,
    "json": _FROM_CAST,
    "bool": _FROM_BOOL,
    "datetime": _FROM_RAW,
}


def _caster(kind: str) -> Callable[[str], str]:
    if kind == "timestamp":
        return _TimestampFormat()
    return {
        "datetime": _datetime,
        "bigint": _bigint,
        "uint64": _uint64,
        "bool": _bool,
        "json": canonical_json,
    }[kind]


def _getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """itemgetter that always returns a tuple (also for zero or one key)."""
    if not names:
        return lambda record: ()
    if len(names) == 1:
        only = names[0]
        return lambda record: (record[only],)
    return itemgetter(*names)


class RowFormatter:
    """Raw records of one file → COPY text lines of one appmetrica table, one pass per record.

    `columns` is the COPY column order: `row_uuid`, `application_id`, the typed fields,
    then the text fields (only the fields the file holds). With `header`, records are
    sequences of values in that order (CSV rows); otherwise they are field → value
    mappings (JSON objects). `line(record)` raises `CastError` (a ValueError naming the
    field and the value) for a value that does not cast.
    """

    def __init__(
        self,
        mapping: ResourceMapping,
        application_id: str | int,
        present: Iterable[str] | None = None,
        *,
        header: Sequence[str] | None = None,
    ) -> None:
        text = str(application_id).strip()
        if not text.isdigit():
            raise ValueError(f"application_id {application_id!r} must be a numeric id")
        self.mapping = mapping
        self.application_id = int(text)
        if header is not None:
            present = header
        available = None if present is None else set(present)
        chosen = [
            (name, kind) for name, kind in mapping.fields if available is None or name in available
        ]
        self.missing = tuple(
            name
            for name, _kind in mapping.fields
            if available is not None and name not in available
        )
        typed = [(name, kind) for name, kind in chosen if kind != "text"]
        texts = [name for name, kind in chosen if kind == "text"]
        typed_names = [name for name, _kind in typed]
        self.columns: tuple[str, ...] = (*_LOADER_COLUMNS, *typed_names, *texts)
        self._names = (*typed_names, *texts)
        self._kinds = tuple(kind for _name, kind in typed)
        self._casts = tuple(_caster(kind) for kind in self._kinds)
        self._json_positions = tuple(i for i, kind in enumerate(self._kinds) if kind == "json")
        typed_index = {name: i for i, name in enumerate(typed_names)}
        text_index = {name: i for i, name in enumerate(texts)}
        # (source, index) per identity field, in the identity's order; a field the file does
        # not hold enters as "" (as a NULL does).
        self._identity = tuple(
            (_IDENTITY_SOURCE[mapping.kind(name)], typed_index[name])
            if name in typed_index
            else ((_FROM_TEXT, text_index[name]) if name in text_index else (_ABSENT, 0))
            for name in mapping.identity
        )
        self._text_count = len(texts)
        if header is not None:
            position = {name: i for i, name in enumerate(header)}
            self._typed_get = _getter([position[name] for name in typed_names])
            self._text_get = _getter([position[name] for name in texts])
        else:
            self._typed_get = _getter(typed_names)
            self._text_get = _getter(texts)
        self._prefix = f"{mapping.spec.name}\x1f{self.application_id}"
        self._head = str(self.application_id)
        self.line: Callable[[Any], str] = self._compile()
        """The COPY text line (no newline) for one raw record; CastError for a bad value."""

    def _slow_line(self, record: Any) -> str:
        """`line` for a record missing a field, or holding a value that is not a string (a
        JSON null or number): "" and text filled in, then the same checks apply."""
        if not isinstance(record, Mapping):
            raise ValueError(
                f"a record of {len(record)} values does not match the file's header"
            ) from None
        return self.line({name: field_text(record.get(name)) for name in self._names})

    def _compile(self) -> Callable[[Any], str]:
        """Generate `line(record)` for this file's fields, unrolled (no per-field loop).

        The same steps as a loop over the fields would take — cast each non-empty typed value
        (NULL when empty), join the identity, UUIDv5 it, escape, join the line — but with the
        field positions baked in, which halves the per-row cost of the hot path.
        """
        count = len(self._kinds)
        body = ["    typed = typed_get(record)", "    texts = text_get(record)"]
        if count:
            body.append(f"    {', '.join(f'v{i}' for i in range(count))}, = typed")
            body.append("    try:")
            body += [f"        c{i} = cast{i}(v{i}) if v{i} else NULL" for i in range(count)]
            body.append("    except ValueError:")
            body.append("        raise_cast_error(typed)")
            body.append("        raise")
        identity = {
            _FROM_CAST: '(c{i} if v{i} else "")',
            _FROM_SECONDS: '(str(int(v{i})) if v{i} else "")',
            _FROM_RAW: "v{i}",
            _FROM_BOOL: '("true" if c{i} == "t" else "false" if c{i} == "f" else "")',
            _FROM_TEXT: "texts[{i}]",
            _ABSENT: '""',
        }
        parts = ", ".join(["prefix"] + [identity[s].format(i=i) for s, i in self._identity])
        body.append(f'    name = "\\x1f".join(({parts},)).encode()')
        body.append(
            "    digest = bytearray(sha1(namespace + name, usedforsecurity=False).digest()[:16])"
        )
        body.append("    digest[6] = digest[6] & 0x0F | 0x50")
        body.append("    digest[8] = digest[8] & 0x3F | 0x80")
        for i in self._json_positions:
            body.append(
                f'    if v{i} and ("\\\\" in c{i} or "\\n" in c{i} or "\\t" in c{i} '
                f'or "\\r" in c{i}):'
            )
            body.append(f"        c{i} = escape(c{i})")
        fields = ["{digest.hex()}", "{head}"] + [f"{{c{i}}}" for i in range(count)]
        if self._text_count:
            fields.append("{text_block(texts)}")
        body.append('    return f"' + TAB_ESCAPE.join(fields) + '"')
        # A field missing from a record, or a value that is not a string: the slow path.
        body = [
            "def line(record):",
            "    try:",
            *("    " + line for line in body),
            "    except (KeyError, IndexError, TypeError):",
            "        return slow_line(record)",
        ]
        namespace: dict[str, Any] = {
            "NULL": NULL,
            "sha1": hashlib.sha1,
            "namespace": ROW_UUID_NAMESPACE.bytes,
            "prefix": self._prefix,
            "head": self._head,
            "escape": escape,
            "raise_cast_error": self._raise_cast_error,
            "text_block": self._text_block,
            "typed_get": self._typed_get,
            "text_get": self._text_get,
            "slow_line": self._slow_line,
        }
        namespace.update({f"cast{i}": cast for i, cast in enumerate(self._casts)})
        source = "\n".join(body)
        exec(compile(source, f"<RowFormatter {self.mapping.resource}>", "exec"), namespace)
        return namespace["line"]

    def _text_block(self, texts: tuple[str, ...]) -> str:
        """The text fields as COPY text: escaped where needed, empty values as NULL."""
        joined = "\t".join(texts)
        if (
            "\\" in joined
            or "\n" in joined
            or "\r" in joined
            or joined.count("\t") != self._text_count - 1
        ):
            return "\t".join([escape(value) if value else NULL for value in texts])
        if "" in texts:
            return "\t".join([value or NULL for value in texts])
        return joined

    def _raise_cast_error(self, typed: tuple[str, ...]) -> None:
        """Find the value that does not cast and raise CastError naming its field."""
        for name, cast, raw in zip(self._names, self._casts, typed, strict=False):
            if raw:
                try:
                    cast(raw)
                except ValueError as exc:
                    raise CastError(name, raw, str(exc)) from None


@dataclass(frozen=True)
class ResourceMapping:
    """One resource compiled: its table spec, (field, kind) in column order, identity fields."""

    resource: str
    spec: TableSpec
    fields: tuple[tuple[str, str], ...]
    identity: tuple[str, ...]

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
    ) -> RowFormatter:
        """A RowFormatter for one file of this application.

        `present`: the fields the file's records hold (mappings); `header`: the order of the
        values of sequence records (a CSV header).
        """
        return RowFormatter(self, application_id, present, header=header)


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
            (column.name, rule.fields[column.name] or KIND_OF_COLUMN[column.type])
            for column in spec.columns
            if column.name in rule.fields
        )
        resources[resource] = ResourceMapping(resource, spec, fields, tuple(rule.identity))
    return AppMetricaMapping(model.source, model.record_id, resources, path)


def load_appmetrica_mapping(path: Path | str | None = None) -> AppMetricaMapping:
    """Read, validate and compile a mapping file (default: the shipped `appmetrica.yaml`)."""
    path = Path(path) if path is not None else MAPPING_PATH
    model = read_mapping_file(path, AppMetricaMappingFile, AppMetricaMappingError)
    return compile_appmetrica_mapping(model, path)
