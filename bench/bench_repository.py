"""Benchmark: 100,000 events_part rows through insert_batch, copy_rows and raw COPY.

Usage: python bench/bench_repository.py [--rows 100000] [--fast]
By default PostgreSQL runs with its default durability (fsync, synchronous_commit,
full_page_writes on); `--fast` measures on the test suite's fsync-off cluster instead.
copy_rows is the idempotent path (staging + ON CONFLICT DO NOTHING); raw COPY the limit.
Targets (issue 2): copy_rows >= 50% of raw COPY and >= 2.5x insert_batch.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime, timedelta

from services import add_server_flags, fresh_database, load_average, postgres

from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.tables import EVENTS_PART

DEVICES = 1000


def make_rows(count: int) -> list[tuple]:
    """Realistic events_part rows (13 columns), devices drawn from a pool of 1,000."""
    start = datetime(2024, 3, 2)
    return [
        (
            uuid.UUID(int=i + 1),
            f"event_{i % 40}",
            start + timedelta(seconds=i % 86400),
            155683 + i % 5000 if i % 3 else None,
            "Android",
            f"device-{i % DEVICES}",
            i % 500,
            "Russian",
            "android",
            "13",
            1709341053000 + i // 50,
            "5.1.0",
            "5.4.2",
        )
        for i in range(count)
    ]


def prepare(dsn: str) -> Repository:
    """A repository on a fresh database holding the devices the rows reference."""
    conn = open_connection(dsn)
    repo = Repository(conn)
    repo.copy_rows("mobile_devices", [(f"device-{i}", *([None] * 6)) for i in range(DEVICES)])
    return repo


def timed(label: str, rows: int, action) -> float:
    """Run and time one load; print and return rows/s."""
    started = time.perf_counter()
    inserted = action()
    seconds = time.perf_counter() - started
    assert inserted == rows, f"{label}: inserted {inserted}, expected {rows}"
    rate = rows / seconds
    print(f"{label:<14} {rows:>9,} rows in {seconds:6.2f}s = {rate:>9,.0f} rows/s")
    return rate


def main() -> None:
    """Run the three loads on fresh databases and print rows/s with their ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    add_server_flags(parser)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    dicts = [dict(zip(EVENTS_PART.column_names, row, strict=True)) for row in rows]
    columns = ", ".join(EVENTS_PART.column_names)
    with postgres(fast=args.fast) as pg:
        repo = prepare(fresh_database(pg, "bench_insert"))
        insert = timed(
            "insert_batch", len(rows), lambda: repo.insert_batch("events_part", dicts).count
        )

        repo = prepare(fresh_database(pg, "bench_copy_rows"))
        copy_rows = timed("copy_rows", len(rows), lambda: repo.copy_rows("events_part", rows))

        repo = prepare(fresh_database(pg, "bench_raw_copy"))

        def raw_copy() -> int:
            with repo.transaction() as conn, conn.cursor() as cursor:
                with cursor.copy(f"COPY events_part ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return len(rows)

        raw = timed("raw COPY", len(rows), raw_copy)
    print(f"copy_rows / raw COPY     = {copy_rows / raw:5.2f}  (target >= 0.50)")
    print(f"copy_rows / insert_batch = {copy_rows / insert:5.2f}  (target >= 2.50)")
    print(load_average())


if __name__ == "__main__":
    main()
