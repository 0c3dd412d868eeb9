"""Keyset pages of a DWH table: sorted on one column plus the table's key, continued by cursor.

A page is `ORDER BY <column>, <key columns>` (one direction, NULLs last) with `LIMIT n`; the
cursor is the sort values of its last row, so the next page is a `WHERE (...) > (...)` (`<`
when descending) that an index can serve, stable while rows are inserted, and never an OFFSET
scan. The cursor is opaque to clients (URL-safe base64 of JSON) and names the order it
belongs to.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row

from dwh_helper.dwh.repository import InvalidQuery, Repository, cast_pk
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES, TMP_USER_PROPERTIES, get_table


@dataclass(frozen=True)
class Page:
    """Rows of one page and the cursor of the next (None on the last page)."""

    rows: list[dict[str, Any]]
    after: str | None


def _order(
    spec: Any, sort_by: str | None, sort_dir: Literal["asc", "desc"]
) -> tuple[list[str], str]:
    if sort_by is None and spec is CHANGEABLE_USER_PROPERTIES:
        sort_by, sort_dir = "event_time", "desc"
    columns = [sort_by] if sort_by else []
    columns += [column for column in spec.key if column not in columns]
    return columns, sort_dir


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def encode_cursor(columns: list[str], direction: str, row: dict[str, Any]) -> str:
    """The cursor after `row` in this order."""
    payload = {"o": [*columns, direction], "v": [_as_text(row[column]) for column in columns]}
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, columns: list[str], direction: str) -> list[str | None]:
    """The sort values a cursor holds; 422 (`after`) when it is not a cursor of this order."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        values = payload["v"]
        order = payload["o"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise InvalidQuery("after", "not a cursor; pass the `after` of a `next` link") from None
    if order != [*columns, direction]:
        raise InvalidQuery(
            "after", "the cursor belongs to another sort order; keep sort_by/sort_dir"
        )
    if (
        not isinstance(values, list)
        or len(values) != len(columns)
        or not all(value is None or isinstance(value, str) for value in values)
    ):
        raise InvalidQuery("after", "not a cursor; pass the `after` of a `next` link")
    return values


def select_page(
    repo: Repository,
    table: str,
    *,
    pk: Any = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_dir: Literal["asc", "desc"] = "asc",
    migrated: bool | None = None,
    after: str | None = None,
) -> Page:
    """One page of a table (filtered on its `pk` column and `migrated`), after a cursor."""
    spec = get_table(table)
    limit = repo.default_limit if limit is None else limit
    if not 1 <= limit <= repo.max_limit:
        raise InvalidQuery("limit", f"must be between 1 and {repo.max_limit}, got {limit}")
    if sort_by is not None and sort_by not in spec.column_names:
        raise InvalidQuery(
            "sort_by",
            f"unknown column {sort_by!r} of {spec.name}; valid: {', '.join(spec.column_names)}",
        )
    if migrated is not None and spec is not TMP_USER_PROPERTIES:
        raise InvalidQuery("migrated", f"only applies to {TMP_USER_PROPERTIES.name}")
    columns, direction = _order(spec, sort_by, sort_dir)
    where: list[sql.Composable] = []
    params: list[Any] = []
    if pk is not None:
        where.append(sql.SQL("{} = %s").format(sql.Identifier(spec.pk)))
        params.append(cast_pk(spec, pk))
    if migrated is not None:
        where.append(sql.SQL("migrated = %s"))
        params.append(migrated)
    if after is not None:
        condition, values = _after(
            spec, columns, direction, decode_cursor(after, columns, direction)
        )
        where.append(condition)
        params.extend(values)
    keyword = sql.SQL("ASC" if direction == "asc" else "DESC")
    query = sql.SQL("SELECT * FROM {}{} ORDER BY {} LIMIT %s").format(
        sql.Identifier(spec.schema, spec.name),
        sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        sql.SQL(", ").join(
            sql.SQL("{} {} NULLS LAST").format(sql.Identifier(column), keyword)
            for column in columns
        ),
    )
    params.append(limit + 1)
    with repo.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query, params).fetchall()
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        following = encode_cursor(columns, direction, rows[-1])
    return Page(rows, following)


def _after(
    spec: Any, columns: list[str], direction: str, values: list[str | None]
) -> tuple[sql.Composable, list[Any]]:
    """`WHERE` rows that come after these sort values (NULLs of the first column last)."""
    operator = sql.SQL(">" if direction == "asc" else "<")

    def typed(names: list[str]) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("CAST(%s AS {})").format(sql.SQL(spec.column(name).type)) for name in names
        )

    def row(names: list[str]) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, names))

    first, rest = columns[0], columns[1:]
    if any(value is None for value in values[1:]):
        raise InvalidQuery("after", "not a cursor; pass the `after` of a `next` link")
    if values[0] is None:
        if not rest:
            return sql.SQL("FALSE"), []
        condition = sql.SQL("({} IS NULL AND ({}) {} ({}))").format(
            sql.Identifier(first), row(rest), operator, typed(rest)
        )
        return condition, values[1:]
    condition = sql.SQL("({} IS NULL OR ({}) {} ({}))").format(
        sql.Identifier(first), row(columns), operator, typed(columns)
    )
    return condition, values
