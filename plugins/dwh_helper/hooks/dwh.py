"""The DWH connection (`dwh_postgres`) as an autocommit psycopg 3 connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

DWH_CONN_ID = "dwh_postgres"


@contextmanager
def dwh_connection(conn_id: str = DWH_CONN_ID) -> Iterator[psycopg.Connection]:
    """An autocommit psycopg 3 connection from the Airflow connection `conn_id`, closed on exit."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    if not isinstance(conn, psycopg.Connection):
        conn.close()
        raise TypeError(
            f"connection {conn_id!r} gave {type(conn).__name__}, not a psycopg 3 connection; "
            "install psycopg 3 and SQLAlchemy 2 so the Postgres provider uses psycopg 3"
        )
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()
