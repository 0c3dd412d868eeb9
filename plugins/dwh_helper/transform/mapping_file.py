"""Reading a YAML mapping file into its Pydantic model, with errors naming file and entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from dwh_helper.transform.values import OnInvalid, yaml_null_policy

Model = TypeVar("Model", bound=BaseModel)


class PolicyRule(BaseModel):
    """A mapping entry that may say what an invalid value costs (`on_invalid`)."""

    on_invalid: OnInvalid | None = Field(
        None,
        description="what an invalid value costs: reject the record, or store NULL and report "
        "it (default: reject for required, key and identity fields, null for the others)",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_null(cls, data: Any) -> Any:
        """`on_invalid: null` in YAML reads as None: it means the policy `null`."""
        return yaml_null_policy(data)

    def policy(self, default: OnInvalid) -> OnInvalid:
        """The entry's `on_invalid`, or `default` when the file does not say."""
        return self.on_invalid or default


def read_mapping_file(path: Path, model: type[Model], error: type[Exception]) -> Model:
    """Parse and validate `path`; raise `error` with the file and each bad entry's location."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read the mapping: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or '<file>'}: {item['msg']}" for item in exc.errors()
        )
        raise error(f"{path}: invalid mapping: {problems}") from None
