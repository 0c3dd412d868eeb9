"""What the benchmarks run against: a throwaway PostgreSQL, moto S3 in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from dwh_helper.dwh.repository import open_connection  # noqa: E402
from dwh_helper.dwh.schema import migrate  # noqa: E402
from dwh_helper.sandbox.postgres import TemporaryPostgres, free_port  # noqa: E402

BUCKET = "bench-raw"


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 server in a child process (so its memory is not counted as the loader's)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket=BUCKET)
        yield url
    finally:
        process.terminate()
        process.wait()


@contextmanager
def postgres() -> Iterator[TemporaryPostgres]:
    """A throwaway PostgreSQL with a migrated template database `bench_template`."""
    with TemporaryPostgres() as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_template")
        with open_connection(pg.dsn_for("bench_template")) as conn:
            migrate(conn)
        yield pg


def fresh_database(pg: TemporaryPostgres, name: str) -> str:
    """(Re)create database `name` from the migrated template; returns its DSN."""
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE bench_template").format(sql.Identifier(name))
        )
    return pg.dsn_for(name)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
