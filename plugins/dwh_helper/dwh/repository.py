"""Reads and writes of the DWH tables over psycopg 3.

The repository takes a connection (from `PostgresHook` on Airflow) or a
`psycopg_pool.ConnectionPool` (the API) and never opens its own. Connections
are expected in autocommit mode: every write runs in an explicit transaction.
"""

from __future__ import annotations

import math
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from dwh_helper.dwh.copy_text import TEXT, CopyDialect
from dwh_helper.dwh.tables import (
    TableSpec,
    get_table,
)

POSTGRES_MAX_PARAMS = 65535

COPY_FLUSH_BYTES = 16 * 1024 * 1024
"""COPY data handed to libpq before waiting for it to reach the server (psycopg's default is
1 MB). A loader batch is a few MB: waiting once per batch instead of once per MB spares the
writer thread most of its trips back for the GIL while a reader thread is busy."""


class InvalidQuery(ValueError):
    """A request the repository refuses; `field` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class InsertResult:
    """What `insert_batch` did: keys of the rows inserted (conflicts skipped), statements run."""

    inserted_ids: list[str] = field(default_factory=list)
    batches: int = 0

    @property
    def count(self) -> int:
        """Number of rows inserted."""
        return len(self.inserted_ids)


def rows_per_statement(
    columns: int,
    max_params: int = POSTGRES_MAX_PARAMS,
    safety_factor: float = 0.8,
    max_rows: int | None = None,
) -> int:
    """Rows one multi-row INSERT may carry: ⌊max_params / columns × safety_factor⌋, capped."""
    rows = max(1, math.floor(max_params / columns * safety_factor))
    rows = min(rows, POSTGRES_MAX_PARAMS // columns)
    return min(rows, max_rows) if max_rows else rows


def cast_pk(spec: TableSpec, value: Any) -> Any:
    """`value` as the type of the table's `pk` column; InvalidQuery (`pk`) when it is not one."""
    if spec.pk_type == "uuid":
        try:
            return uuid_module.UUID(str(value))
        except ValueError:
            raise InvalidQuery("pk", f"{value!r} is not a uuid ({spec.name}.{spec.pk})") from None
    if spec.pk_type in ("bigint", "integer"):
        try:
            number = int(str(value))
        except ValueError:
            raise InvalidQuery(
                "pk", f"{value!r} is not an integer ({spec.name}.{spec.pk})"
            ) from None
        if not -(2**63) <= number < 2**63:
            raise InvalidQuery("pk", f"{value!r} is out of range for {spec.pk_type}")
        return number
    return str(value)


class Repository:
    """select / insert_batch / copy_rows over the DWH tables."""

    def __init__(
        self,
        source: psycopg.Connection | Any,
        *,
        max_params: int = POSTGRES_MAX_PARAMS,
        safety_factor: float = 0.8,
        max_rows_per_insert: int | None = None,
        default_limit: int = 100,
        max_limit: int = 10000,
    ) -> None:
        self._source = source
        self._tx: psycopg.Connection | None = None
        self.max_params = max_params
        self.safety_factor = safety_factor
        self.max_rows_per_insert = max_rows_per_insert
        self.default_limit = default_limit
        self.max_limit = max_limit

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """The connection in use: the open transaction's, the given one, or one from the pool."""
        if self._tx is not None:
            yield self._tx
        elif isinstance(self._source, psycopg.Connection):
            yield self._source
        else:
            with self._source.connection() as conn:
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction; repository calls inside it join it (nested ones use savepoints)."""
        if self._tx is not None:
            with self._tx.transaction():
                yield self._tx
            return
        with self.connection() as conn, conn.transaction():
            self._tx = conn
            try:
                yield conn
            finally:
                self._tx = None

    # -- reads -------------------------------------------------------------

    def latest_changeable(self, ehr_ids: Iterable[int | None]) -> dict[int | None, dict[str, Any]]:
        """Each person's newest changeable_user_properties row; key None is the null-ehr slot."""
        wanted = set(ehr_ids)
        ids = [ehr_id for ehr_id in wanted if ehr_id is not None]
        result: dict[int | None, dict[str, Any]] = {}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            if ids:
                rows = cursor.execute(
                    "SELECT DISTINCT ON (ehr_id) * FROM changeable_user_properties "
                    "WHERE ehr_id = ANY(%s) ORDER BY ehr_id, event_time DESC, uuid DESC",
                    (ids,),
                ).fetchall()
                result.update((row["ehr_id"], row) for row in rows)
            if None in wanted:
                row = cursor.execute(
                    "SELECT * FROM changeable_user_properties WHERE ehr_id IS NULL "
                    "ORDER BY event_time DESC, uuid DESC LIMIT 1"
                ).fetchone()
                if row is not None:
                    result[None] = row
        return result

    # -- writes ------------------------------------------------------------

    def insert_batch(self, table: str, rows: Sequence[Mapping[str, Any]]) -> InsertResult:
        """Multi-row INSERT … ON CONFLICT DO NOTHING RETURNING the key, chunked under 65,535 params.

        All chunks run in one transaction: a failure leaves nothing behind.
        """
        spec = get_table(table)
        result = InsertResult()
        if not rows:
            return result
        present = set().union(*(row.keys() for row in rows))
        unknown = present - set(spec.column_names)
        if unknown:
            raise InvalidQuery(
                "data",
                f"unknown columns {sorted(unknown)} for {spec.name}; valid: "
                f"{', '.join(spec.column_names)}",
            )
        columns = [name for name in spec.column_names if name in present]
        jsonb = {column.name for column in spec.columns if column.type == "jsonb"}
        chunk = rows_per_statement(
            len(columns), self.max_params, self.safety_factor, self.max_rows_per_insert
        )
        head = sql.SQL("INSERT INTO {} ({}) VALUES ").format(
            sql.Identifier(spec.schema, spec.name), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        tail = sql.SQL(" ON CONFLICT ({}) DO NOTHING RETURNING {}::text").format(
            sql.SQL(", ").join(map(sql.Identifier, spec.key)), sql.Identifier(spec.key[0])
        )
        full_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        with self.transaction() as conn:
            head_text, tail_text = head.as_string(conn), tail.as_string(conn)
            for start in range(0, len(rows), chunk):
                params: list[Any] = []
                values: list[str] = []
                for row in rows[start : start + chunk]:
                    if len(row) == len(columns):
                        values.append(full_row)
                        cells = None
                    else:
                        cells = []
                    for name in columns:
                        if name not in row:
                            cells.append("DEFAULT")  # type: ignore[union-attr]
                            continue
                        value = row[name]
                        if name in jsonb and value is not None and not isinstance(value, Jsonb):
                            value = Jsonb(value)
                        if cells is not None:
                            cells.append("%s")
                        params.append(value)
                    if cells is not None:
                        values.append("(" + ", ".join(cells) + ")")
                cursor = conn.execute(head_text + ", ".join(values) + tail_text, params)
                result.inserted_ids.extend(row[0] for row in cursor.fetchall())
                result.batches += 1
        return result

    def copy_rows(
        self,
        table: str | TableSpec,
        rows: Iterable[Sequence[Any]],
        *,
        direct: bool = False,
        binary: bool = False,
    ) -> int:
        """Bulk load: streaming COPY into temp staging, then INSERT … ON CONFLICT DO NOTHING.

        `rows` are tuples in the table's column order (jsonb as JSON text, a dict or `Jsonb`).
        Returns the number of rows inserted (conflicts skipped). `direct`: straight into the
        table in a savepoint, as `copy_text(direct=True)` (a key already there raises
        `UniqueViolation`; `rows` must then be given again to load them through staging).
        `binary`: COPY's binary format, cheaper to write and to read for both sides, for a
        table without jsonb columns; every value must then be of its column's own Python type
        (`UUID` for uuid, `datetime` for timestamp, `int`, `bool`, `str`), as the value layer
        makes them.
        """
        spec = table if isinstance(table, TableSpec) else get_table(table)
        json_positions = [i for i, column in enumerate(spec.columns) if column.type == "jsonb"]
        if binary and json_positions:
            raise InvalidQuery(
                "binary",
                f"{spec.name}.{spec.columns[json_positions[0]].name} is jsonb: "
                "COPY its rows in the text format",
            )

        def write(copy: psycopg.Copy) -> None:
            if binary:
                copy.set_types([column.type for column in spec.columns])
            for row in rows:
                if json_positions:
                    row = _json_cells(row, json_positions)
                copy.write_row(row)

        if direct:
            return self._copy_direct(spec, spec.column_names, write, binary=binary)
        return self._copy_via_stage(spec, spec.column_names, write, binary=binary)

    def copy_text(
        self,
        table: str | TableSpec,
        columns: Sequence[str],
        chunks: Iterable[bytes | str],
        *,
        dialect: CopyDialect = TEXT,
        direct: bool = False,
        skip_present: bool = False,
    ) -> int:
        """Bulk load rows already formatted as COPY text (see `dwh.copy_text`) for `columns`.

        Columns left out take their defaults. Same staging and ON CONFLICT as `copy_rows`.
        `dialect` tells the NULL marker and the delimiter the lines use (COPY's defaults
        unless told).

        `direct`: COPY the lines straight into the table — no staging, no ON CONFLICT — in a
        savepoint of the open transaction (or a transaction of its own); the fast path of an
        idempotent load: a key already in the table (or twice in the lines) raises
        `UniqueViolation` and the savepoint leaves nothing of the lines behind, so the caller
        can load them again through staging.

        `skip_present`: staging keeps every column but the key as text, and a row whose key
        is in the table already is skipped before PostgreSQL reads its other values (no JSON
        parsed, nothing sorted): a re-load costs a key lookup a row. A value PostgreSQL
        refuses then raises from the INSERT, not the COPY, so the error names no COPY line;
        load the lines again without it to have the line named.
        """
        spec = _text_target(table, columns)
        write = _chunk_writer(chunks)
        if direct:
            return self._copy_direct(spec, columns, write, dialect)
        skip_present = skip_present and set(spec.key) <= set(columns)
        return self._copy_via_stage(spec, tuple(columns), write, dialect, skip_present=skip_present)

    def _copy_direct(
        self,
        spec: TableSpec,
        columns: Sequence[str],
        write: Callable[[psycopg.Copy], None],
        dialect: CopyDialect = TEXT,
        *,
        binary: bool = False,
    ) -> int:
        """COPY straight into the table in a savepoint (see `copy_text`'s `direct`)."""
        target = sql.Identifier(spec.schema, spec.name)
        statement = _copy_statement(target, columns, dialect, binary=binary)
        with self.transaction() as conn, conn.cursor() as cursor:
            writer = LibpqWriter(cursor, flush_threshold=COPY_FLUSH_BYTES)
            with cursor.copy(statement, writer=writer) as copy:
                write(copy)
            return cursor.rowcount

    def _copy_via_stage(
        self,
        spec: TableSpec,
        columns: Sequence[str],
        write: Callable[[psycopg.Copy], None],
        dialect: CopyDialect = TEXT,
        *,
        binary: bool = False,
        skip_present: bool = False,
    ) -> int:
        """COPY into a temporary staging table, then INSERT … ON CONFLICT DO NOTHING into the
        table; `skip_present`: see `copy_text`."""
        if binary and skip_present:  # the text stage's columns cannot take binary values
            raise ValueError("skip_present needs COPY text: binary rows go to the typed stage")
        stage = _text_stage(spec) if skip_present else _typed_stage(spec)
        with self.transaction() as conn:
            conn.execute(stage.create)
            conn.execute(sql.SQL("TRUNCATE {}").format(stage.name))
            with conn.cursor() as cursor:
                statement = _copy_statement(stage.name, columns, dialect, binary=binary)
                writer = LibpqWriter(cursor, flush_threshold=COPY_FLUSH_BYTES)
                with cursor.copy(statement, writer=writer) as copy:
                    write(copy)
                if not skip_present:
                    return cursor.execute(stage.insert(columns)).rowcount
                # No JIT for the probes: their estimated cost passes its threshold, and
                # compiling the plan takes longer than a batch's lookups (0.3 s against 0.04 s)
                (jit, _off) = cursor.execute(
                    "SELECT current_setting('jit'), set_config('jit', 'off', true)"
                ).fetchone()
                inserted = cursor.execute(stage.insert(columns)).rowcount
                cursor.execute("SELECT set_config('jit', %s, true)", (jit,))
                return inserted

    def mark_migrated(self, uuids: Iterable[Any]) -> int:
        """Set migrated = true on these tmp_user_properties rows; returns how many changed.

        The ids (`UUID`s or their text) go as one binary uuid[] parameter: no text to build
        and parse for each of a batch's thousands of ids.
        """
        ids = [_as_uuid(item) for item in uuids]
        if not ids:
            return 0
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE tmp_user_properties SET migrated = true WHERE uuid = ANY(%b) "
                "AND NOT migrated",
                (ids,),
            ).rowcount


def _as_uuid(value: Any) -> uuid_module.UUID:
    """`value` as a UUID (it may be one already, or its text)."""
    if value.__class__ is uuid_module.UUID:
        return value
    try:
        return uuid_module.UUID(str(value))
    except ValueError:
        raise InvalidQuery("uuid", f"{value!r} is not a uuid") from None


@dataclass(frozen=True)
class _Stage:
    """A temporary staging table for one DWH table: its name, its DDL and its INSERT."""

    name: sql.Identifier
    create: sql.Composable
    insert: Callable[[Sequence[str]], sql.Composable]


def _typed_stage(spec: TableSpec) -> _Stage:
    """Staging shaped like the table; every row goes to INSERT … ON CONFLICT DO NOTHING. Rows
    in key order: concurrent loads with overlapping keys (say, the same devices in
    mobile_devices) take their row locks in one order, so they wait for each other instead
    of deadlocking."""
    stage = sql.Identifier(f"stage_{spec.schema}_{spec.name}")
    target = sql.Identifier(spec.schema, spec.name)
    every = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    create = sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    ).format(stage, target)
    insert = sql.SQL(
        "INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY {} ON CONFLICT DO NOTHING"
    ).format(target, every, every, stage, sql.SQL(", ").join(map(sql.Identifier, spec.key)))
    return _Stage(stage, create, lambda _columns: insert)


def _text_stage(spec: TableSpec) -> _Stage:
    """Staging with every column but the key as text: a row whose key the table holds is
    skipped before its other values are cast (`copy_text(skip_present=True)`). OFFSET 0 keeps
    the lookup an index probe a row: as an anti-join the planner may read the whole table
    for a batch of a few thousand rows. Key order, as in `_typed_stage`."""
    stage = sql.Identifier(f"stage_text_{spec.schema}_{spec.name}")
    target = sql.Identifier(spec.schema, spec.name)
    key = set(spec.key)
    create = sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        stage,
        sql.SQL(", ").join(
            sql.SQL("{} {}").format(
                sql.Identifier(column.name),
                sql.SQL(column.type if column.name in key else "text"),
            )
            for column in spec.columns
        ),
    )

    def cast(name: str) -> sql.Composable:
        kind = spec.column(name).type
        if name in key or kind == "text":
            return sql.SQL("s.{}").format(sql.Identifier(name))
        return sql.SQL("s.{}::{}").format(sql.Identifier(name), sql.SQL(kind))

    same_key = sql.SQL(" AND ").join(
        sql.SQL("t.{0} = s.{0}").format(sql.Identifier(name)) for name in spec.key
    )
    order = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(name)) for name in spec.key)

    def insert(columns: Sequence[str]) -> sql.Composable:
        return sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} s "
            "WHERE NOT EXISTS (SELECT FROM {} t WHERE {} OFFSET 0) "
            "ORDER BY {} ON CONFLICT DO NOTHING"
        ).format(
            target,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(map(cast, columns)),
            stage,
            target,
            same_key,
            order,
        )

    return _Stage(stage, create, insert)


def _text_target(table: str | TableSpec, columns: Sequence[str]) -> TableSpec:
    """The table COPY text goes to, once every column named is one of its own."""
    spec = table if isinstance(table, TableSpec) else get_table(table)
    unknown = set(columns) - set(spec.column_names)
    if unknown:
        raise InvalidQuery("columns", f"unknown columns {sorted(unknown)} for {spec.name}")
    return spec


def _copy_statement(
    target: sql.Identifier, columns: Sequence[str], dialect: CopyDialect, *, binary: bool = False
) -> sql.Composable:
    """`COPY target (columns) FROM STDIN`, with the dialect's NULL marker and delimiter (or in
    the binary format)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    if binary:
        statement += sql.SQL(" (FORMAT BINARY)")
    elif dialect != TEXT:
        statement += sql.SQL(" (NULL {}, DELIMITER {})").format(
            sql.Literal(dialect.null), sql.Literal(dialect.delimiter)
        )
    return statement


def _chunk_writer(chunks: Iterable[bytes | str]) -> Callable[[psycopg.Copy], None]:
    """Writes COPY text chunks (str encoded in the connection's encoding) to a COPY."""

    def write(copy: psycopg.Copy) -> None:
        encoding = copy.connection.info.encoding
        for chunk in chunks:
            # a view: psycopg sends large buffers in slices, which copy bytes but not views
            copy.write(memoryview(chunk.encode(encoding) if isinstance(chunk, str) else chunk))

    return write


def _json_cells(row: Sequence[Any], positions: list[int]) -> Sequence[Any]:
    for position in positions:
        value = row[position]
        if value is not None and not isinstance(value, str | Jsonb):
            row = list(row)
            row[position] = Jsonb(value)
    return row


def open_connection(dsn: str) -> psycopg.Connection:
    """An autocommit connection, the kind the repository and the migrations expect."""
    return psycopg.connect(dsn, autocommit=True)
