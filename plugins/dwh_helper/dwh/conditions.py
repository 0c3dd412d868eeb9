"""WHERE conditions from optional filters: a condition counts only when its value is given."""

from __future__ import annotations

from typing import Any

from psycopg import sql


def conditions(*filters: tuple[str, Any]) -> tuple[list[str], list[Any]]:
    """The `(condition, value)` pairs whose value is not None: their conditions and values."""
    given = [(condition, value) for condition, value in filters if value is not None]
    return [condition for condition, _ in given], [value for _, value in given]


def where_clause(where: list[str]) -> sql.Composable:
    """` WHERE a AND b …` of these conditions, or nothing when there are none."""
    if not where:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(map(sql.SQL, where))
