"""Benchmark: migrate_user_properties over pending tmp_user_properties rows.

For each size (default 100,000 and 1,000,000 rows) it seeds a fresh database
with COPY (realistic properties: a pool of people whose state changes now and
then, unknown keys, ~0.5 % values that must be rejected), then runs the step in
a child process so the seeding does not count towards its memory, and prints
rows/s and the child's peak RSS (`resource.getrusage`).

Usage: python bench/bench_user_properties.py [--rows 100000 1000000] [--batch-size 5000]
Target (issue 5): >= 20,000 rows/s at 1,000,000 rows, memory flat in the number of rows.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from services import fresh_database, peak_rss_mb, postgres

from dwh_helper.dwh.repository import Repository, open_connection

START = datetime(2024, 3, 1)
CITIES = ["SPB", "Moscow", "Kazan", "N/A"]


def _person(rng: random.Random, ehr_id: int) -> dict:
    props: dict = {
        "EHR_ID": str(ehr_id) if ehr_id % 20 else rng.choice(["N/A", "no ehr", None]),
        "Gender": rng.choice(["Female", "Male", "N/A"]),
        "Age": f"{rng.randrange(18, 80)} лет",
        "app_city": rng.choice(CITIES),
        "Notifications state": rng.choice(["Enabled", "Disabled"]),
        "Authorized": rng.choice(["true", "false"]),
        "cohort_day": rng.randrange(400),
        "registered_via_app": rng.choice(["via app", "0", "unknown"]),
        "source": rng.choice(["organic", "ads", None]),
        "telemed_messages_sent": rng.randrange(30),
        "appointments_booked": rng.randrange(10),
    }
    if rng.random() < 0.3:
        props["Ehr Count"] = rng.randrange(1, 4)
    return props


def seed_rows(count: int, people: int, seed: int = 7) -> Iterator[tuple]:
    """Pending tmp_user_properties rows in COPY column order, generated lazily."""
    rng = random.Random(seed)
    pool = [_person(rng, ehr_id) for ehr_id in range(1, people + 1)]
    step = timedelta(seconds=86400 * 7 / count)
    for index in range(count):
        props = pool[rng.randrange(people)]
        roll = rng.random()
        if roll < 0.1:  # the person's state changes
            props["telemed_messages_sent"] = props.get("telemed_messages_sent", 0) + 1
        if roll > 0.995:  # a value the mapping rejects
            props = {**props, "cohort_day": "twelve"}
        yield (
            uuid.UUID(int=index + 1),
            json.dumps(props, ensure_ascii=False),
            "Russian",
            1709341053000 + index // 20 if roll > 0.05 else -1,
            "5.1.0",
            START + step * index,
            False,
        )


def seed(dsn: str, count: int, people: int) -> float:
    """COPY `count` pending rows into tmp_user_properties; returns the seconds it took."""
    started = time.perf_counter()
    with open_connection(dsn) as conn, conn.transaction(), conn.cursor() as cursor:
        with cursor.copy(
            "COPY tmp_user_properties (uuid, user_properties_json, language, session_id, "
            "start_version, event_time, migrated) FROM STDIN"
        ) as copy:
            for row in seed_rows(count, people):
                copy.write_row(row)
    with open_connection(dsn) as conn:
        conn.execute("VACUUM ANALYZE tmp_user_properties")
    return time.perf_counter() - started


def run_step(dsn: str, batch_size: int) -> dict:
    """(child process) Run the step once and report its result, rate and peak memory."""
    from dwh_helper.pipeline.user_properties import migrate_user_properties

    with open_connection(dsn) as conn:
        started = time.perf_counter()
        result = migrate_user_properties(Repository(conn), batch_size=batch_size)
        seconds = time.perf_counter() - started
    rows = result.processed + result.rejected
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "processed": result.processed,
        "rejected": result.rejected,
        "permanent": result.permanent_inserted,
        "changeable": result.changeable_inserted,
        "batches": result.batches,
        "unknown_keys": result.unknown_keys,
    }


def main() -> None:
    """Seed, run in a child process, print rows/s and peak RSS for each size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_step(args.child, args.batch_size)))
        return
    print(f"user-properties ETL, batch size {args.batch_size}, {args.people:,} people")
    with postgres() as pg:
        for count in args.rows:
            dsn = fresh_database(pg, f"bench_user_properties_{count}")
            seconds = seed(dsn, count, args.people)
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


if __name__ == "__main__":
    main()
