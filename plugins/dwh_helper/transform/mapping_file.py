"""Reading a YAML mapping file into its Pydantic model, with errors naming file and entry."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


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
