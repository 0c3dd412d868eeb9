"""Benchmark: migrate_user_properties over pending tmp_user_properties rows.

For each size (default 100,000 and 1,000,000 rows) it seeds a fresh database
with COPY from the Amplitude sandbox's events (10,000 an hour: people whose
properties change now and then, people without an id, unknown keys, ~1 %
values the mapping rejects), then runs the step in a child process so the
seeding does not count towards its memory, and prints rows/s, the child's
peak RSS (`resource.getrusage`) and the CPU time per row of the child and of its
PostgreSQL backends (comparable between runs on a busy machine, where rows/s is not).

Beside the step (e2e) it times the write limits of the same output: the permanent and
changeable rows the step produced, dumped and loaded into a fresh database in one
transaction straight (raw COPY, not idempotent) and through staging + ON CONFLICT DO NOTHING
(the idempotent limit); all three as pending rows per second of the same input.

Usage: python bench/bench_user_properties.py [--rows 100000 1000000] [--batch-size 5000] [--fast]
By default PostgreSQL runs with its default durability (fsync, synchronous_commit,
full_page_writes on); `--fast` measures on the test suite's fsync-off cluster instead.
Target (issue 15): >= 20,000 rows/s on the durable server, memory flat in the number of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from services import add_server_flags, fresh_database, load_average, peak_rss_mb, postgres

from devtools.sandbox.amplitude_events import iter_hour
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.tables import get_table

OUTPUT_TABLES = ("permanent_user_properties", "changeable_user_properties")
START = datetime(2024, 3, 1, tzinfo=UTC)
PROJECT_ID = 374182


def seed_rows(count: int, events_per_hour: int = 10_000, seed: int = 42) -> Iterator[tuple]:
    """Pending tmp_user_properties rows (COPY column order) from the Amplitude sandbox's events.

    The sandbox generates what the export holds: a pool of people whose
    properties change now and then, events of people without an id, unknown
    keys (`Ehr Count`, `google_pay_available`) and about 1 % values the mapping
    rejects. Generated lazily, hour by hour.
    """
    left = count
    hour = START
    while left > 0:
        for event in iter_hour(PROJECT_ID, hour, seed, min(events_per_hour, left)):
            yield (
                event["uuid"],
                json.dumps(event["user_properties"], ensure_ascii=False),
                event["language"],
                event["session_id"],
                event["start_version"],
                event["event_time"],
                False,
            )
            left -= 1
        hour += timedelta(hours=1)


def seed(dsn: str, count: int) -> float:
    """COPY `count` pending rows into tmp_user_properties; returns the seconds it took."""
    started = time.perf_counter()
    with open_connection(dsn) as conn, conn.transaction(), conn.cursor() as cursor:
        with cursor.copy(
            "COPY tmp_user_properties (uuid, user_properties_json, language, session_id, "
            "start_version, event_time, migrated) FROM STDIN"
        ) as copy:
            for row in seed_rows(count):
                copy.write_row(row)
    with open_connection(dsn) as conn:
        conn.execute("VACUUM ANALYZE tmp_user_properties")
    return time.perf_counter() - started


def backend_cpu_seconds(*conns: psycopg.Connection) -> float:
    """CPU seconds (user + system) the server processes behind `conns` have used so far: read
    from /proc, the benchmark's server runs on this machine."""
    total = 0
    for conn in conns:
        pid = conn.info.backend_pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_step(dsn: str, batch_size: int) -> dict:
    """(child process) Run the step once and report its result, rate, CPU time (its own and
    its server processes': less disturbed by other jobs on the machine than the rate) and
    peak memory."""
    from dwh_helper.pipeline.user_properties import migrate_user_properties

    # as the operator runs it: a second connection reads the next batch while one is written
    with open_connection(dsn) as conn, psycopg.connect(dsn, autocommit=True) as reader:
        server_before = backend_cpu_seconds(conn, reader)
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = migrate_user_properties(Repository(conn), batch_size=batch_size, reader=reader)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server_cpu = backend_cpu_seconds(conn, reader) - server_before
    rows = result.processed + result.rejected
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "cpu_us_per_row": cpu / rows * 1e6,
        "server_cpu_us_per_row": server_cpu / rows * 1e6,
        "peak_rss_mb": peak_rss_mb(),
        "processed": result.processed,
        "rejected": result.rejected,
        "permanent": result.permanent_inserted,
        "changeable": result.changeable_inserted,
        "batches": result.batches,
        "unknown_keys": result.unknown_keys,
    }


def write_limits(pg, dsn: str) -> dict[str, float]:
    """Seconds to write the step's output rows again into a fresh database: raw and idempotent."""
    dumped = {}
    with open_connection(dsn) as conn, conn.cursor() as cursor:
        for name in OUTPUT_TABLES:
            with cursor.copy(f"COPY {name} TO STDOUT") as copy:
                dumped[name] = b"".join(bytes(chunk) for chunk in copy)
    seconds = {}
    for kind in ("raw", "idempotent"):
        with open_connection(fresh_database(pg, f"bench_write_{kind}")) as conn:
            repo = Repository(conn)
            started = time.perf_counter()
            with repo.transaction():
                for name, data in dumped.items():
                    spec = get_table(name)
                    repo.copy_text(spec, spec.column_names, [data], direct=kind == "raw")
            seconds[kind] = time.perf_counter() - started
    return seconds


def main() -> None:
    """Seed, run in a child process, print rows/s and peak RSS for each size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=5000)
    add_server_flags(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_step(args.child, args.batch_size)))
        return
    print(f"user-properties ETL over sandbox events, batch size {args.batch_size}")
    with postgres(fast=args.fast) as pg:
        for count in args.rows:
            dsn = fresh_database(pg, f"bench_user_properties_{count}")
            seconds = seed(dsn, count)
            print(f"  seeded {count:,} pending rows with COPY in {seconds:.1f}s", flush=True)
            child = subprocess.run(
                [sys.executable, __file__, "--child", dsn, "--batch-size", str(args.batch_size)],
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"  {report['rows']:>9,} rows in {report['seconds']:6.1f}s = "
                f"{report['rows_per_second']:>8,.0f} rows/s, "
                f"peak RSS {report['peak_rss_mb']:.0f} MB "
                f"({report['processed']:,} processed, {report['rejected']:,} rejected, "
                f"{report['permanent']:,} permanent, {report['changeable']:,} changeable, "
                f"{report['batches']} batches)",
                flush=True,
            )
            print(
                f"  CPU per row: {report['cpu_us_per_row']:.1f} µs in the step's process, "
                f"{report['server_cpu_us_per_row']:.1f} µs in its PostgreSQL backends",
                flush=True,
            )
            limits = write_limits(pg, dsn)
            raw, idempotent = (report["rows"] / limits[kind] for kind in ("raw", "idempotent"))
            e2e = report["rows_per_second"]
            print(
                f"  write limits of the same output: raw COPY {raw:,.0f} rows/s, idempotent "
                f"{idempotent:,.0f} rows/s; e2e / raw {e2e / raw:.2f}, e2e / idempotent "
                f"{e2e / idempotent:.2f}, idempotent / raw {idempotent / raw:.2f}; "
                f"{load_average()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
