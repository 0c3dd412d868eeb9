"""Reading an event whose JSON nests deeper than the value layer's limit, field by field."""

from __future__ import annotations

import json

from dwh_helper.transform import values
from dwh_helper.transform.value_json import JSON_TOKENS


def drop_deep_fields(text: str) -> tuple[str, dict[str, str]]:
    """Top-level fields nested deeper than the JSON limit replaced by null (and named), so
    the rest of the event can still be read; other lines unchanged."""
    if text.count("[") + text.count("{") <= values.MAX_JSON_DEPTH:
        return text, {}
    if values.json_depth(text) <= values.MAX_JSON_DEPTH:
        return text, {}
    unreadable: dict[str, str] = {}
    parts: list[str] = []
    depth, deepest, last_key, value_start, copied = 0, 0, None, 0, 0
    for token in JSON_TOKENS.finditer(text):
        piece = token.group()
        if piece[0] == '"':
            if depth == 1 and text[token.end() :].lstrip().startswith(":"):
                last_key = json.loads(piece)
                value_start = text.index(":", token.end()) + 1
                deepest = 1
            continue
        if piece in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif piece in "]}":
            depth -= 1
            if depth == 1 and deepest - 1 > values.MAX_JSON_DEPTH and last_key is not None:
                parts += [text[copied:value_start], "null"]
                copied = token.end()
                unreadable[last_key] = f"JSON nested deeper than {values.MAX_JSON_DEPTH} levels"
                deepest = 1
    parts.append(text[copied:])
    return "".join(parts), unreadable
