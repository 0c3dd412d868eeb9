"""The user-properties mapping (`field_mappings.yaml`): Pydantic models and their loader.

The file says which user-properties key fills which column of
`permanent_user_properties` and `changeable_user_properties`, how its value is
converted, and which values mean null. It is validated when loaded: an unknown
type, a target that is not a column of its table, a type that does not fit the
column, or a malformed regex is a `MappingError` naming the file and the entry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from dwh_helper.dwh.tables import (
    CHANGEABLE_USER_PROPERTIES,
    PERMANENT_USER_PROPERTIES,
    TableSpec,
)
from dwh_helper.transform.mapping_file import PolicyRule

DEFAULT_MAPPING_PATH = Path(__file__).with_name("field_mappings.yaml")
"""The mapping shipped with the package."""

FieldType = Literal["string", "integer", "boolean"]
Origin = Literal["user_properties", "record"]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None

_SQL_TYPES: dict[str, FieldType] = {
    "text": "string",
    "integer": "integer",
    "bigint": "integer",
    "boolean": "boolean",
}
# Columns the transform fills itself, never from a mapping entry.
_PERMANENT_FIXED = ("ehr_id", "first_login_at")
_CHANGEABLE_FIXED = ("uuid", "ehr_id", "event_time")


class MappingError(ValueError):
    """The mapping file is invalid; the message names the file, the entry and what to fix."""


class FieldRule(PolicyRule):
    """One target column: its source keys in order and how their value is converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    keys: list[str] = Field(min_length=1)
    type: FieldType
    origin: Origin = "user_properties"
    lowercase: bool = False
    value_map: dict[str, Scalar] = Field(default_factory=dict)
    extract_regex: str | None = None
    true_values: list[Scalar] = Field(default_factory=list)
    false_values: list[Scalar] = Field(default_factory=list)
    null_values: list[Scalar] = Field(default_factory=list)
    # on_invalid (PolicyRule) unset: `reject` for `ehr_id` (the person), `null` for the rest

    @field_validator("extract_regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise ValueError(f"malformed extract_regex {value!r}: {exc}") from None
            if compiled.groups > 1:
                raise ValueError(
                    f"extract_regex {value!r} has {compiled.groups} groups; use at most one"
                )
        return value

    @model_validator(mode="after")
    def _options_fit_type(self) -> FieldRule:
        if self.type != "boolean" and (self.true_values or self.false_values):
            raise ValueError(f"true_values/false_values only apply to booleans, not {self.type}")
        if self.type == "boolean" and not (self.true_values or self.false_values):
            raise ValueError("a boolean needs true_values and/or false_values")
        if self.type == "boolean" and self.extract_regex:
            raise ValueError("extract_regex does not apply to booleans")
        if self.lowercase and self.type != "string":
            raise ValueError(f"lowercase only applies to strings, not {self.type}")
        both = [
            value for value in self.true_values if _typed(value) in _typed_set(self.false_values)
        ]
        if both:
            raise ValueError(f"values both true and false: {both}")
        return self


class FieldMappings(BaseModel):
    """The whole mapping: the person id, the permanent and changeable columns, ignored keys."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    null_values: list[Scalar] = Field(default_factory=lambda: [None, "N/A"])
    ehr_id: FieldRule
    ignore_keys: list[str] = Field(default_factory=list)
    permanent: list[FieldRule]
    changeable: list[FieldRule]

    @field_validator("ehr_id")
    @classmethod
    def _ehr_rule(cls, rule: FieldRule) -> FieldRule:
        if rule.column != "ehr_id" or rule.type != "integer" or rule.origin != "user_properties":
            raise ValueError(
                "must be `column: ehr_id`, `type: integer` taken from user_properties "
                f"(got column {rule.column!r}, type {rule.type!r}, origin {rule.origin!r})"
            )
        return rule

    @model_validator(mode="after")
    def _targets_are_columns(self) -> FieldMappings:
        _check_targets("permanent", self.permanent, PERMANENT_USER_PROPERTIES, _PERMANENT_FIXED)
        _check_targets("changeable", self.changeable, CHANGEABLE_USER_PROPERTIES, _CHANGEABLE_FIXED)
        return self

    def rules(self) -> list[FieldRule]:
        """Every rule: the ehr_id rule, then permanent, then changeable."""
        return [self.ehr_id, *self.permanent, *self.changeable]

    def known_keys(self) -> frozenset[str]:
        """user_properties keys the mapping reads or ignores on purpose."""
        keys = {
            key for rule in self.rules() if rule.origin == "user_properties" for key in rule.keys
        }
        return frozenset(keys | set(self.ignore_keys))


def _typed(value: Any) -> tuple[type, Any]:
    """A value with its type, so that 1, 1.0, True and "1" never compare equal."""
    return (type(value), value)


def _typed_set(values: list[Any]) -> frozenset[tuple[type, Any]]:
    return frozenset(_typed(value) for value in values)


def _check_targets(
    section: str, rules: list[FieldRule], spec: TableSpec, fixed: tuple[str, ...]
) -> None:
    allowed = [name for name in spec.column_names if name not in fixed]
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        where = f"{section}[{index}] (column {rule.column!r})"
        if rule.column not in allowed:
            raise ValueError(
                f"{where}: not a mappable column of {spec.name}; valid: {', '.join(allowed)}"
            )
        if rule.column in seen:
            raise ValueError(f"{where}: column already mapped by {section}[{seen[rule.column]}]")
        seen[rule.column] = index
        wanted = _SQL_TYPES.get(spec.column(rule.column).type)
        if wanted is not None and wanted != rule.type:
            raise ValueError(
                f"{where}: type {rule.type!r} does not fit {spec.name}.{rule.column} "
                f"({spec.column(rule.column).type}); use type: {wanted}"
            )


def _describe(error: dict[str, Any], raw: Any) -> str:
    loc = error.get("loc", ())
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and "column" in node:
                    parts[-1] += f" (column {node['column']!r})"
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    if error.get("type") == "literal_error":
        message += f" (got {error.get('input')!r})"
    return f"{'.'.join(parts)}: {message}" if parts else message


def parse_field_mappings(data: Any, source: str = "<mapping>") -> FieldMappings:
    """Validate an already-parsed mapping document; `source` names it in errors."""
    if not isinstance(data, dict):
        raise MappingError(f"{source}: expected a mapping document, got {type(data).__name__}")
    try:
        return FieldMappings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, data) for error in exc.errors())
        raise MappingError(f"{source}: invalid field mapping: {problems}") from None


def load_field_mappings(path: Path | str | None = None) -> FieldMappings:
    """Load and validate a mapping file (default: the shipped `field_mappings.yaml`)."""
    file = Path(path) if path is not None else DEFAULT_MAPPING_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{file}: cannot read the field mapping: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingError(f"{file}: not valid YAML{where}: {problem}") from None
    return parse_field_mappings(data, str(file))
