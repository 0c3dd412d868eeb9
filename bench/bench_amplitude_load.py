"""Benchmark: the Amplitude load end to end against the idempotent load limit, same run.

For each size (default 100,000, 300,000 and 1,000,000 events) it generates a realistic
day archive with the sandbox generator, puts it in moto's S3 server (its own process),
and measures in child processes on fresh databases:
  (a) limit: the same events already mapped to COPY text, loaded batch by batch with
      COPY into staging + INSERT ... ON CONFLICT DO NOTHING into the six tables;
  (b) e2e:   `load_amplitude_file` from S3 into PostgreSQL (download, unzip, parse, map, load).
It prints events/s for both, their ratio and the loader's peak memory.

Usage: python bench/bench_amplitude_load.py [--events 100000 300000 1000000] [--batch-size N]
Targets (issue 3): e2e >= 80% of the limit; peak memory < 300 MB at 1,000,000 events and
within 50 MB of the 100,000-event run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

from services import (
    ROOT,
    CopyBatches,
    fresh_database,
    moto_process,
    peak_rss_mb,
    postgres,
    run_child,
    store_for,
)

from devtools.sandbox.amplitude_events import write_day_archive
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.schema import ensure_month_partitions
from dwh_helper.pipeline.amplitude import load_amplitude_file
from dwh_helper.pipeline.load import DEFAULT_BATCH_SIZE
from dwh_helper.sources.amplitude import iter_lines
from dwh_helper.transform.event_mapping import amplitude_mapping, parse_json_line

DAY = date(2024, 3, 2)
OUT = ROOT / "bench" / "out"


def archive_for(events: int) -> Path:
    """The generated day archive of `events` events (cached in bench/out/)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"amplitude_{events}.zip"
    if not path.exists():
        started = time.perf_counter()
        write_day_archive(path, 374182, DAY, 42, 0, total_events=events)
        print(
            f"  generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
    return path


def child_limit(dsn: str, archive: Path, batch_size: int) -> dict:
    """(a): pre-map the events to per-batch COPY text files, then time only their loading."""
    mapping = amplitude_mapping()
    seen: set[str] = set()
    count = 0
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as tmp:
        batches = CopyBatches(Path(tmp), mapping.tables)
        for raw in iter_lines(archive):
            for table, text, key in mapping.map_event(parse_json_line(raw.data)):
                if text is None or (table.first_per_file and key in seen):
                    continue
                if table.first_per_file:
                    seen.add(key)
                batches.lines[table].append(text)
            count += 1
            if count % batch_size == 0:
                batches.flush()
        batches.flush()
        conn = open_connection(dsn)
        ensure_month_partitions(conn, [DAY])
        seconds = batches.load_seconds(Repository(conn))
    return {"events": count, "seconds": seconds}


def child_e2e(dsn: str, s3_url: str, key: str, batch_size: int) -> dict:
    """(b): the real loader, from S3 to PostgreSQL."""
    repo = Repository(open_connection(dsn))
    started = time.perf_counter()
    result = load_amplitude_file(store_for(s3_url), key, repo, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {"events": result.rows_read, "seconds": seconds, "peak_mb": peak_rss_mb()}


def main() -> None:
    """Measure every size and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved measurements per size; the best of each counts",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "limit":
            print(json.dumps(child_limit(rest[0], Path(rest[1]), args.batch_size)))
        else:
            print(json.dumps(child_e2e(rest[0], rest[1], rest[2], args.batch_size)))
        return

    rows = []
    with postgres() as pg, moto_process() as s3_url:
        store = store_for(s3_url)
        for events in args.events:
            archive = archive_for(events)
            key = f"raw/amplitude/web/{DAY:%Y/%m/%d}/web_{DAY:%Y%m%d}_{events}.zip"
            # the metadata extract_amplitude writes: the loader pre-creates the window's partition
            store.upload_file(
                archive,
                key,
                metadata={
                    "source": "web",
                    "window-start": f"{DAY}T00:00:00+00:00",
                    "window-end": f"{DAY}T23:00:00+00:00",
                },
            )
            limits, e2es = [], []
            for _ in range(args.rounds):  # interleaved rounds; the best of each is kept
                limits.append(
                    run_child(
                        __file__,
                        "limit",
                        fresh_database(pg, "bench_limit"),
                        str(archive),
                        batch_size=args.batch_size,
                    )
                )
                e2es.append(
                    run_child(
                        __file__,
                        "e2e",
                        fresh_database(pg, "bench_e2e"),
                        s3_url,
                        key,
                        batch_size=args.batch_size,
                    )
                )
            limit = min(limits, key=lambda run: run["seconds"])
            e2e = min(e2es, key=lambda run: run["seconds"])
            e2e["peak_mb"] = max(run["peak_mb"] for run in e2es)
            assert limit["events"] == e2e["events"] == events, (limit, e2e)
            rows.append(
                (events, events / limit["seconds"], events / e2e["seconds"], e2e["peak_mb"])
            )
            print(
                f"  {events:>9,} events: limit {rows[-1][1]:,.0f}/s, e2e {rows[-1][2]:,.0f}/s, "
                f"peak {e2e['peak_mb']:.0f} MB",
                flush=True,
            )
    print()
    print(
        "| events | idempotent limit (events/s) | load_raw_file e2e (events/s) | e2e / limit "
        "| loader peak RSS (MB) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for events, limit, e2e, peak in rows:
        print(f"| {events:,} | {limit:,.0f} | {e2e:,.0f} | {e2e / limit:.0%} | {peak:.0f} |")


if __name__ == "__main__":
    main()
