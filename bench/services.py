"""What the benchmarks run against: a throwaway PostgreSQL, moto S3 in a process of its own.

The PostgreSQL runs with its default durability settings (fsync, synchronous_commit and
full_page_writes on: what a DWH runs) unless a benchmark is given `--fast` (all three off,
the test suite's cluster). Every benchmark prints the settings it measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from devtools.sandbox.postgres import TemporaryPostgres, free_port  # noqa: E402
from dwh_helper.dwh.repository import open_connection  # noqa: E402
from dwh_helper.dwh.schema import migrate  # noqa: E402

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


SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The `--fast` flag every benchmark takes."""
    parser.add_argument(
        "--fast",
        action="store_true",
        help="measure on the fsync-off test cluster instead of a durable (default) PostgreSQL",
    )


def server_settings(dsn: str) -> str:
    """The settings that decide write speed, as one line."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        shown = [
            f"{name}={conn.execute(sql.SQL('SHOW {}').format(sql.Identifier(name))).fetchone()[0]}"
            for name in SETTINGS
        ]
    return "PostgreSQL " + ", ".join(shown)


def load_average() -> str:
    """The machine's load average (1, 5, 15 minutes): the benchmarks' numbers are only as
    good as the machine is quiet."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


@contextmanager
def postgres(fast: bool = False) -> Iterator[TemporaryPostgres]:
    """A throwaway PostgreSQL with a migrated template database `bench_template`: durable
    unless `fast`; prints its settings."""
    with TemporaryPostgres(durable=not fast) as pg:
        print(server_settings(pg.dsn), flush=True)
        print(load_average(), flush=True)
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
        # every measurement starts from a clean server: without it, a run pays for flushing
        # the pages the run before it dirtied (a checkpoint falls in the middle of it)
        conn.execute("CHECKPOINT")
    return pg.dsn_for(name)


def store_for(s3_url: str) -> Any:
    """An ObjectStore on the benchmark bucket, downloading each object in one GET.

    moto answers every ranged GET by reading the whole object, so boto3's parallel ranged
    download of a 400 MB file costs it ~25 full reads (5 s instead of 1 s here); S3 and
    MinIO serve ranges directly. One GET keeps the benchmarks about the loader, not moto.
    """
    from dwh_helper.config import S3Settings
    from dwh_helper.storage.s3 import ObjectStore, build_s3_client

    settings = S3Settings(endpoint_url=s3_url, bucket_name=BUCKET)
    return ObjectStore(build_s3_client(settings), BUCKET, multipart_threshold=1 << 40)


def run_child(script: str, *args: str, batch_size: int) -> dict:
    """Run a benchmark script as a child measuring one thing; returns its last JSON line."""
    output = subprocess.run(
        [sys.executable, script, "--batch-size", str(batch_size), "--child", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


class CopyBatches:
    """The limits' input: COPY text per table written to files batch by batch while the
    records are mapped, then loaded — and only that timed — in one transaction: through
    staging + ON CONFLICT DO NOTHING (the idempotent limit) or straight into the target
    tables (`raw`: the raw-COPY limit, not idempotent)."""

    def __init__(self, directory: Path, tables: Any) -> None:
        self.directory = Path(directory)
        self.lines: dict[Any, list[str]] = {table: [] for table in tables}
        self.batches: list[list[tuple[Any, Path]]] = []

    def flush(self) -> None:
        """Write the lines gathered so far as one batch (a file per table that has lines)."""
        files = []
        for table, lines in self.lines.items():
            if lines:
                path = self.directory / f"{len(self.batches)}_{table.spec.name}.copy"
                path.write_text("\n".join(lines) + "\n")
                files.append((table, path))
                lines.clear()
        self.batches.append(files)

    def load_seconds(self, repo: Any, *, raw: bool = False) -> float:
        """Load every batch in one transaction — `Repository.copy_text` (idempotent) or, `raw`,
        a plain COPY into each table — and return the seconds taken."""
        started = time.perf_counter()
        with repo.transaction():
            for files in self.batches:
                for table, path in files:
                    data = [path.read_bytes()]
                    repo.copy_text(
                        table.spec, table.columns, data, dialect=table.copy_dialect, direct=raw
                    )
        return time.perf_counter() - started


class WalMeter:
    """The WAL a server writes between `start` and `stop_mb`: the database's share of a
    load's work (raw COPY and the staging path differ by the speculative-insertion records)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.start_lsn = "0/0"

    def _written_since(self, lsn: str) -> tuple[str, float]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            now, written = conn.execute(
                "SELECT pg_current_wal_lsn()::text, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                (lsn,),
            ).fetchone()
        return now, float(written)

    def start(self) -> None:
        """Remember the current WAL position."""
        self.start_lsn, _ = self._written_since(self.start_lsn)

    def stop_mb(self) -> float:
        """MB of WAL written since `start`."""
        return self._written_since(self.start_lsn)[1] / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
