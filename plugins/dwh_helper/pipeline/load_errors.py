"""How a failed load is described: LoadError naming the file, retryable or not, without row data."""

from __future__ import annotations

import re

import psycopg

from dwh_helper.dwh.schema import PartitionUnavailable
from dwh_helper.storage.s3 import ObjectReadError
from dwh_helper.transform.values import RefusedValue


class LoadError(RuntimeError):
    """A raw file could not be loaded; nothing of it was committed. Names the file (and the
    entry and line when known); `retryable` says whether running it again may succeed
    (connection loss, deadlock, serialization failure, timeout) or not (data, corrupt file,
    too many rejects). The message never carries row data."""

    def __init__(
        self,
        key: str,
        message: str,
        *,
        retryable: bool = False,
        entry: str | None = None,
        line: int | None = None,
    ) -> None:
        where = f" ({entry}" + (f", line {line}" if line is not None else "") + ")" if entry else ""
        super().__init__(f"{key}{where}: {message}")
        self.key = key
        self.retryable = retryable
        self.entry = entry
        self.line = line


class CorruptFile(Exception):
    """Raised by a format's reader when the file itself (not one record) is unreadable."""


_COPY_CONTEXT = re.compile(r"COPY \S+, line (\d+)(?:, column (\w+))?")


def copy_context(error: psycopg.Error) -> tuple[int | None, str | None]:
    """The COPY line (1 = first line sent) and column PostgreSQL names in the error's context."""
    match = _COPY_CONTEXT.search(error.diag.context or "")
    if match is None:
        return None, None
    return int(match.group(1)), match.group(2)


def describe_error(error: BaseException) -> str:
    """An error as one line without row data: PostgreSQL's primary message with quoted values
    masked, the SQLSTATE, the table and column it names (never DETAIL or CONTEXT, which quote
    the row); other errors as their type and message, cut short."""
    if isinstance(error, psycopg.Error):
        diag = error.diag
        message = _mask_values(diag.message_primary or type(error).__name__)
        parts = [message]
        if diag.sqlstate:
            parts.append(f"SQLSTATE {diag.sqlstate}")
        line, copy_column = copy_context(error)
        column = diag.column_name or copy_column
        if diag.table_name:
            parts.append(f"table {diag.table_name}")
        if column:
            parts.append(f"column {column}")
        if line is not None:
            parts.append(f"batch line {line}")
        return f"{type(error).__name__}: " + "; ".join(parts)
    if isinstance(error, RefusedValue):
        return error.without_value()
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:300]}"


_QUOTED = re.compile(r'(\w+ )?"(?:[^"]|"")*"')


_IDENTIFIER_WORDS = frozenset(
    {"table ", "constraint ", "column ", "relation ", "encoding ", "index ", "schema ", "type "}
)


def _mask_values(message: str) -> str:
    """PostgreSQL's primary message with double-quoted values masked (`invalid input syntax
    for type bigint: "EHR-4711"`), quoted identifiers kept (`table "events_part"`)."""

    def mask(match: re.Match[str]) -> str:
        word = match.group(1) or ""
        return match.group(0) if word in _IDENTIFIER_WORDS else f'{word}"…"'

    return _QUOTED.sub(mask, message)


_RETRYABLE_STATES = ("08", "40", "53", "55P03", "57P", "57014", "58")
"""SQLSTATE prefixes worth a retry: connection, transaction rollback (deadlock, serialization),
insufficient resources, lock not available, operator intervention/shutdown, query canceled
(statement timeout), system error."""


def is_retryable(error: BaseException) -> bool:
    """Whether running the load again may succeed: the database or the object store was
    unreachable, a deadlock, a serialization failure, a timeout — not bad data."""
    if isinstance(error, LoadError):
        return error.retryable
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        if state:
            return state.startswith(_RETRYABLE_STATES)
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(error, ObjectReadError | ConnectionError | TimeoutError)


def as_load_error(key: str, error: BaseException) -> LoadError:
    """Any exception of a load as a LoadError naming the file, honest about `retryable`, with
    no row data in its message."""
    if isinstance(error, LoadError):
        return error
    if isinstance(error, CorruptFile):
        return LoadError(key, f"corrupt file, nothing loaded: {first_line(error)}")
    if isinstance(error, PartitionUnavailable):
        return LoadError(key, f"nothing loaded: {first_line(error)}", retryable=True)
    retryable = is_retryable(error)
    if isinstance(error, ObjectReadError):
        return LoadError(key, f"nothing loaded: {first_line(error)}", retryable=True)
    if isinstance(error, psycopg.Error):
        what = "database unavailable" if retryable else "the database refused the load"
        return LoadError(
            key, f"{what}, nothing loaded: {describe_error(error)}", retryable=retryable
        )
    return LoadError(key, f"nothing loaded: {describe_error(error)}", retryable=retryable)


def first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0][:500] if text else type(error).__name__


def without_value(error: BaseException) -> str:
    """A reject's reason for logs and load_log.error: the column and why, not the value."""
    if isinstance(error, RefusedValue):
        return error.without_value()
    cast_field, reason = getattr(error, "field", None), getattr(error, "reason", None)
    if cast_field is not None and reason is not None:
        return f"field {cast_field}: {reason}"
    return first_line(error)[:200]
