"""Raw AppMetrica records (all strings) → COPY text lines of one `appmetrica` table.

`RowFormatter` is what the loader runs a million times per file, so it is generated
code: for the fields one file holds it compiles a `line(record)` function with the
field positions baked in, each value checked and cast (with per-file caches for the
timestamps and JSON texts that repeat within a day), `row_uuid` computed exactly as
the reference `row_uuid` of the tests computes it (`tests/support/appmetrica_oracle.py`), and
the line assembled in one f-string.
Only a line that needs COPY escaping (a backslash, tab or line break in a value)
takes a second, escaping variant of the same generated code.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

import msgspec
from msgspec.structs import astuple

from dwh_helper.catalogue.appmetrica import LOADER_COLUMNS, field_text
from dwh_helper.dwh.appmetrica_schema import FALLBACK_MARK, ROW_UUID_NAMESPACE, fallback_identity
from dwh_helper.dwh.copy_text import CopyDialect, escape
from dwh_helper.transform import values
from dwh_helper.transform.appmetrica_mapping import ResourceMapping


class CastError(ValueError):
    """A value that cannot be converted: names the field, the value, why, and the row if known."""

    def __init__(self, field: str, value: str, reason: str, row: int | None = None) -> None:
        where = f"row {row}: " if row is not None else ""
        shown = value if len(value) <= 200 else value[:200] + "..."
        super().__init__(f"{where}field {field!r} = {shown!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
        self.row = row


COPY_DIALECT = CopyDialect(null="")
"""The COPY text a RowFormatter writes: NULL as an empty field (an empty string is NULL
whatever the kind, so no value is ever an empty string), tabs between fields."""
COPY_NULL = COPY_DIALECT.null

# -- casts: a non-empty raw string -> COPY text (ValueError with the reason) --------------------
# The checks are the value layer's (`transform.values`: one definition of what a valid value
# is); the generated code inlines fast paths for the common values and falls back to these.

_EPOCH = date(1970, 1, 1)
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31 23:59:59


def checked_cast(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    """A value-layer cast raising a plain ValueError with the reason (what the generated
    code and the checked path catch)."""

    def check(raw: str) -> Any:
        try:
            return cast(raw)
        except values.InvalidValue as exc:
            raise ValueError(exc.reason) from None

    return check


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
    if 1e-4 <= abs(value) < 1e16:
        return value
    if value == 0.0 and text.lstrip("-0.").strip("eE+-0"):
        raise ValueError("a number too small for a double (it would be stored as 0)")
    if value == 0.0:
        return value
    return _Float(text)


_decode_json = msgspec.json.Decoder(float_hook=_json_float).decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


class NeedsCheck(ValueError):
    """The fast path declines a value (a NUL to remove): the checked path must map the record."""


def canonical_json(raw: str) -> str:
    """A JSON text with sorted keys, no spaces and UTF-8 kept (as `json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)` writes it); ValueError when it is not JSON or
    beyond the value layer's limits (depth, numbers), NeedsCheck when it holds a NUL escape."""
    if "\\u0000" in raw:
        raise NeedsCheck("a NUL in JSON")
    if len(raw) > 2 * values.MAX_JSON_DEPTH and raw.count("[") + raw.count("{") > (
        values.MAX_JSON_DEPTH
    ):
        if values.json_depth(raw) > values.MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {values.MAX_JSON_DEPTH} levels")
    try:
        value = _decode_json(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
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


CASTS: dict[str, Callable[[str], str]] = {
    "unix_seconds": checked_cast(values.unix_seconds),
    "timestamp": checked_cast(values.plain_datetime),
    "bigint": checked_cast(values.bigint),
    "uint64": checked_cast(values.uint64),
    "boolean": checked_cast(values.loose_boolean),
    "json": canonical_json,
}
"""Per kind: a non-empty raw string → its COPY text, or ValueError saying what was expected."""


class _DayText:
    """`YYYY-MM-DD ` of a day number since 1970-01-01, remembered (a file spans few days)."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self.get = self._days.get

    def text(self, day: int) -> str:
        """The day's text; ValueError when the day is outside years 1..9999."""
        if not _MIN_SECONDS // 86400 <= day <= _MAX_SECONDS // 86400:
            raise ValueError("Unix seconds out of range")
        if len(self._days) >= 4096:
            self._days.clear()
        text = self._days[day] = (_EPOCH + timedelta(days=day)).isoformat() + " "
        return text


class _JsonTexts:
    """Canonical JSON of the raw texts that repeat within a file, remembered: most events
    carry one of a few parameter sets (in the benchmark's day four rows in five repeat one)."""

    LIMIT = 20_000
    """Texts remembered at most (then forgotten all at once, like `_DayText`)."""
    LONGEST = 256
    """Longer texts are not remembered (they seldom repeat, and would hold memory)."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self.get = self._texts.get

    def text(self, raw: str) -> str:
        """The canonical text of a non-empty raw JSON (`canonical_json`), remembered."""
        canonical = canonical_json(raw)
        if len(raw) <= self.LONGEST:
            if len(self._texts) >= self.LIMIT:
                self._texts.clear()
            self._texts[raw] = canonical
        return canonical


@functools.cache
def _times_of_day() -> tuple[str, ...]:
    """`hh:mm:ss+00` for every second of a day (built once, on first use: by joining minutes
    and seconds, 17 ms, where formatting each second took 170 ms of every task's load)."""
    minutes = [f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
    seconds = [f"{second:02d}+00" for second in range(60)]
    return tuple([minute + second for minute in minutes for second in seconds])


def _or_empty(cast: Callable[[str], str]) -> Callable[[str], str]:
    """A cast for values the inline check did not pass: "" stays "" (NULL), others cast."""
    return lambda raw: cast(raw) if raw else COPY_NULL


# The largest value of each integer kind: the generated code passes a value of plain digits
# through without int() when it has fewer digits, or as many and compares no greater as text.
_LARGEST = {"bigint": str(2**63 - 1), "uint64": str(2**64 - 1)}
_VARIANT = {digit: format(int(digit, 16) & 0x3 | 0x8, "x") for digit in "0123456789abcdef"}
"""The UUID variant nibble (RFC 4122) for each hex digit a SHA-1 gives at that place."""


def _getter(accesses: Sequence[int | str], positional: bool) -> Callable[[Any], Sequence[str]]:
    """The values at these positions (or keys) of a record, as one sequence."""
    if not accesses:
        return lambda record: ()
    first = accesses[0]
    if positional and list(accesses) == list(range(first, first + len(accesses))):  # type: ignore[arg-type]
        return lambda record: record[first : first + len(accesses)]  # type: ignore[operator]
    if len(accesses) == 1:
        return lambda record: (record[first],)
    return itemgetter(*accesses)


class RowFormatter:
    """Raw records of one file → COPY text lines of one appmetrica table, one pass per record.

    `columns` is the COPY column order: `row_uuid`, `application_id`, the typed fields,
    then the text fields (each group in the file's order; only mapped fields the file
    holds), in the COPY dialect `copy_dialect` (NULL as an empty field: an empty string
    is NULL whatever the kind). With `header`, records are
    sequences of strings in that order (CSV rows), or — with `structs` — msgspec Structs
    whose fields are the header's, in that order (decoded JSON items; a header with the
    typed fields first and the text fields next to each other is fastest); otherwise
    they are field → value mappings (JSON objects; a missing field or
    a value that is not a string takes a slower path that treats null as empty).
    `line(record)` raises `CastError` (a ValueError naming the field and the value) for
    a value that does not cast.
    """

    copy_dialect = COPY_DIALECT

    def __init__(
        self,
        mapping: ResourceMapping,
        application_id: str | int,
        present: Iterable[str] | None = None,
        *,
        header: Sequence[str] | None = None,
        structs: bool = False,
    ) -> None:
        text = str(application_id).strip()
        if not text.isdigit():
            raise ValueError(f"application_id {application_id!r} must be a numeric id")
        self.mapping = mapping
        self.application_id = int(text)
        kinds = dict(mapping.fields)
        if header is not None:
            present = header
        order = list(kinds)
        if present is not None:
            order = [name for name in dict.fromkeys(present) if name in kinds]
        order.sort(key=lambda name: kinds[name] == "text")  # typed first, each in file order
        self.missing = tuple(name for name in kinds if name not in order)
        self.identity: tuple[str, ...] = mapping.identity
        """The fields row_uuid is computed from: the resource's identity fields, or — when
        the file lacks one of them — every mapped field it holds (in the mapping's order, so
        CSV and JSON agree): rows that differ anywhere stay apart, exact duplicates collapse."""
        self.identity_fallback = any(name not in order for name in mapping.identity)
        if self.identity_fallback:
            self.identity = fallback_identity(kinds, order)
        self.columns: tuple[str, ...] = (*LOADER_COLUMNS, *order)
        self._names = tuple(order)
        self._kinds = tuple(kinds[name] for name in order)
        self._mode = "key"
        self._access: tuple[int | str, ...] = self._names
        self._application_at: int | None = None
        """Where the file holds its own `application_id` (each record's must be this file's)."""
        if header is not None:
            position = {name: i for i, name in reversed(list(enumerate(header)))}
            self._mode = "struct" if structs else "position"
            self._access = tuple(position[name] for name in order)
            self._application_at = position.get("application_id")
        self._prefix = f"{mapping.spec.name}\x1f{self.application_id}"
        self._by_name: RowFormatter | None = None
        self.line: Callable[[Any], str] = self._compile()
        """The COPY text line (no newline) for one raw record; CastError for a bad value."""

    def _slow_line(self, record: Any) -> str:
        """`line` for a record missing a field, or holding a value that is not a string (a
        JSON null or number): "" and text filled in, then the same checks apply."""
        if self._mode != "key" or not isinstance(record, Mapping):
            size = len(record) if isinstance(record, list | tuple) else "?"
            raise ValueError(f"a record of {size} values does not match the file's header")
        return self.line({name: field_text(record.get(name)) for name in self._names})

    def raw_values(self, record: Any) -> dict[str, str]:
        """The record's raw values of the mapped fields by name ("" for a missing or null one)."""
        if self._mode == "key":
            if not isinstance(record, Mapping):
                raise ValueError("a record that is not an object")
            return {name: field_text(record.get(name)) for name in self._names}
        if isinstance(record, msgspec.Struct):
            record = astuple(record)
        try:
            return {
                name: field_text(record[access])
                for name, access in zip(self._names, self._access, strict=True)
            }
        except IndexError:
            raise ValueError(
                f"a record of {len(record)} values does not match the file's header"
            ) from None

    def checked(self, record: Any) -> values.CheckedRecord:
        """The checked path: value by value through the value layer — NUL removed (counted),
        an invalid value of a rejecting field (identity fields by default) a CastError, of
        any other field stored NULL and reported — then the line of the repaired record."""
        self._check_application(record)
        raw = self.raw_values(record)
        repairs = values.Repairs()
        reports: list[values.ValueReport] = []
        fixed: dict[str, str] = {}
        for name, kind in zip(self._names, self._kinds, strict=True):
            value = raw[name]
            if value:
                try:
                    if kind == "text":
                        value = values.clean_text(value, repairs)
                    elif kind == "json":
                        value = values.clean_json_text(value, repairs)
                        canonical_json(value)
                    else:
                        CASTS[kind](value)
                except ValueError as exc:
                    reason = getattr(exc, "reason", None) or str(exc)
                    if name in self.mapping.rejecting:
                        raise CastError(name, value, reason) from None
                    reports.append(values.ValueReport(self.mapping.spec.name, name, value, reason))
                    value = ""
            fixed[name] = value
        if self._by_name is None:
            self._by_name = RowFormatter(self.mapping, self.application_id, self._names)
        return values.CheckedRecord(
            record,
            [(None, self._by_name.line(fixed), None)],
            reports,
            repairs.count,
        )

    def _check_application(self, record: Any) -> None:
        """CastError when the record's own `application_id` is not the file's application."""
        if self._application_at is None:
            return
        if isinstance(record, msgspec.Struct):
            record = astuple(record)
        try:
            value = field_text(record[self._application_at])
        except (IndexError, KeyError, TypeError):
            return  # a record of another width: the line says so
        text = value.strip()
        if text and not (text.isdigit() and text.isascii() and int(text) == self.application_id):
            self._raise_other_application(value)

    def _raise_other_application(self, value: str) -> None:
        """Raise the CastError of a record whose `application_id` is not the file's."""
        raise CastError(
            "application_id",
            value,
            f"the record is another application's: the file is application "
            f"{self.application_id}'s by its S3 key or metadata (landed under the wrong key?)",
        )

    def _raise_cast_error(self, record: Any) -> None:
        """Find the value that does not cast and raise CastError naming its field."""
        if isinstance(record, msgspec.Struct):  # `line` may have made it a tuple already
            record = astuple(record)
        for name, kind, access in zip(self._names, self._kinds, self._access, strict=True):
            raw = record[access]
            if kind != "text" and raw:
                try:
                    CASTS[kind](raw)
                except ValueError as exc:
                    raise CastError(name, raw, str(exc)) from None

    def _compile(self) -> Callable[[Any], str]:
        """Generate `line(record)` for this file's fields, unrolled (no per-field loop).

        The same steps a loop over the fields would take — cast each typed value, join
        the identity and UUIDv5 it, escape what needs it, assemble the line — with the
        field positions baked in. Unix seconds, booleans and JSON texts go through per-file
        caches; an integer passes a digits check without int() (at the kind's longest, a
        comparison as text with its largest value).
        """
        text_accesses = [a for a, k in zip(self._access, self._kinds, strict=True) if k == "text"]
        text_names = [n for n, k in zip(self._names, self._kinds, strict=True) if k == "text"]
        days = _DayText()
        json_texts = _JsonTexts()
        namespace: dict[str, Any] = {
            "sha1": hashlib.sha1,
            "uuid_namespace": ROW_UUID_NAMESPACE.bytes,
            "prefix": self._prefix,
            "variant": _VARIANT,
            "json_get": json_texts.get,
            "json_text": json_texts.text,
            "escape": escape,
            "join_fields": "\t".join,
            "text_get": _getter(text_accesses, self._mode != "key"),
            "astuple": astuple,
            "raise_cast_error": self._raise_cast_error,
            "day_get": days.get,
            "day_text": days.text,
            "times": _times_of_day(),
            "fromisoformat": datetime.fromisoformat,
            "bools_get": {"": COPY_NULL, "true": "t", "false": "f", "1": "t", "0": "f"}.get,
            "slow_line": self._slow_line,
            "needs_check": NeedsCheck,
        }
        reads, casts, fields, escapes = [], [], [], []
        if self._application_at is not None:  # the file's own application id: this file's
            namespace["raise_other_application"] = self._raise_other_application
            reads.append(f"va = record[{self._application_at}]")
            casts += [
                f'if va and va != "{self.application_id}":',
                "    raise_other_application(va)",
            ]
        for i, (kind, access) in enumerate(zip(self._kinds, self._access, strict=True)):
            if kind == "text":
                continue
            reads.append(
                f"v{i} = record.{access}"
                if self._mode == "attribute"
                else f"v{i} = record[{access!r}]"
            )
            namespace[f"cast{i}"] = _or_empty(CASTS[kind])
            if kind == "unix_seconds":  # Unix seconds: day text (remembered) + time of day
                casts += [
                    f"if v{i}:",
                    f"    if not v{i}.isdigit() or not v{i}.isascii():",
                    f"        cast{i}(v{i})  # a sign is fine; anything else raises",
                    f"    s{i} = int(v{i})",
                    # the digits as read, unless a sign or a leading zero: then as int() reads them
                    f'    k{i} = v{i} if v{i}[0] in "123456789" else str(s{i})',
                    f"    c{i} = (day_get(s{i} // 86400) or day_text(s{i} // 86400)) "
                    f"+ times[s{i} % 86400]",
                    "else:",
                    f'    c{i} = k{i} = ""',
                ]
            elif kind == "timestamp":  # checked as is: 'YYYY-MM-DD hh:mm:ss'
                casts.append(  # the separators (every third character from the fifth) fixed,
                    # digits and ranges checked in C
                    f'c{i} = v{i} if len(v{i}) == 19 and v{i}[4:17:3] == "-- ::" '
                    f"and v{i}.isascii() and fromisoformat(v{i}) else cast{i}(v{i})"
                )
            elif kind == "boolean":
                casts += [
                    f"c{i} = bools_get(v{i})",
                    f"if c{i} is None:",
                    f"    c{i} = cast{i}(v{i})",
                ]
            elif kind in _LARGEST:
                largest = _LARGEST[kind]
                casts.append(
                    f"c{i} = v{i} if v{i}.isdigit() and v{i}.isascii() and "
                    f"(len(v{i}) < {len(largest)} or len(v{i}) == {len(largest)} and "
                    f'v{i} <= "{largest}") and (v{i}[0] != "0" or v{i} == "0") '
                    f"else cast{i}(v{i})"
                )
            else:  # json: canonical text, whose backslashes COPY needs doubled
                casts.append(f'c{i} = (json_get(v{i}) or json_text(v{i})) if v{i} else ""')
                escapes += [f'if "\\\\" in c{i}:', f'    c{i} = c{i}.replace("\\\\", "\\\\\\\\")']
            fields.append(f"c{i}")

        # the parts of the key's f-string; a fallback identity is marked so it never meets a
        # declared one
        identity = ["{prefix}"] + ([FALLBACK_MARK] if self.identity_fallback else [])
        for name in self.identity:
            kind = dict(self.mapping.fields)[name]
            if name not in self._names:
                identity.append("")
            elif kind == "text":
                identity.append(f"{{texts[{text_names.index(name)}]}}")
            else:
                i = self._names.index(name)
                if kind == "boolean":
                    casts.append(f'b{i} = {{"t": "true", "f": "false"}}.get(c{i}, "")')
                identity.append(
                    {
                        "unix_seconds": f"{{k{i}}}",
                        "timestamp": f"{{v{i}}}",  # the raw text, as checked
                        "boolean": f"{{b{i}}}",
                    }.get(kind, f"{{c{i}}}")  # integers and JSON: their cast text
                )
        if text_names:
            fields.append("t")
        key_text = "\\x1f".join(identity)
        body = [
            "def line(record):",
            "    try:",
            *(["        record = astuple(record)"] if self._mode == "struct" else []),
            *(f"        {statement}" for statement in reads),
            "        texts = text_get(record)",
            "        try:",
            *(f"            {statement}" for statement in casts or ["pass"]),
            "        except ValueError:",
            "            raise_cast_error(record)",
            "            raise",
            f'        key = f"{key_text}".encode()',
            "        t = join_fields(texts)",
            "    except (KeyError, IndexError, TypeError, AttributeError):",
            "        return slow_line(record)",
            "    h = sha1(uuid_namespace + key, usedforsecurity=False).hexdigest()",
        ]
        if text_names:  # a tab inside a value shows as one tab too many
            body += [
                '    if "\\\\" in t or "\\n" in t or "\\r" in t or "\\x00" in t '
                f'or t.count("\\t") != {len(text_names) - 1}:',
                '        if "\\x00" in t:',
                "            raise needs_check('a NUL in a text field')",
                "        t = join_fields(map(escape, texts))",
            ]
        body += [f"    {statement}" for statement in escapes]
        body.append(
            '    return f"{h[:12]}5{h[13:16]}{variant[h[16]]}{h[17:32]}'
            + f"\\t{self.application_id}"
            + "".join(f"\\t{{{field}}}" for field in fields)
            + '"'
        )
        self.source = "\n".join(body)
        """The generated source of `line` (for debugging)."""
        exec(compile(self.source, f"<RowFormatter {self.mapping.resource}>", "exec"), namespace)
        return namespace["line"]
