"""Benchmark: the AppMetrica load end to end against the idempotent load limit, same run.

For each format (CSV and JSON) it writes a 1,000,000-row `events` file with the sandbox
generator (exactly what the sandbox serves), puts it in moto's S3 server (its own process),
and measures in child processes on fresh databases:
  (a) limit: the same rows already formatted as COPY text (cast, row_uuid computed), loaded
      batch by batch through `Repository.copy_text` (COPY into staging + INSERT … ON
      CONFLICT DO NOTHING) in one transaction;
  (b) e2e:   `load_appmetrica_file` from S3 into PostgreSQL (download, parse, cast, map, load).
It prints rows/s for both, their ratio and the loader's peak memory (RSS of the child).

Usage: python bench/bench_appmetrica_load.py [--rows 1000000] [--formats csv json]
                                             [--batch-size N] [--repeat 3]
The machines are shared: the limit and the e2e runs are interleaved and the best of each
is compared (each attempt is printed too).
Targets (issue 4): e2e >= 80% of the limit; peak memory < 300 MB for either format.
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

from devtools.sandbox.appmetrica import write_events_file
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.pipeline.appmetrica import AppMetricaFile, load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import DEFAULT_BATCH_SIZE
from dwh_helper.transform.appmetrica_mapping import load_appmetrica_mapping

APPLICATION_ID = "1111"
DAY = date(2024, 3, 1)
OUT = ROOT / "bench" / "out"


def events_file(rows: int, fmt: str) -> Path:
    """The generated events file of `rows` rows (cached in bench/out/)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"appmetrica_events_{rows}.{fmt}"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        write_events_file(partial, fmt, rows, application_id=APPLICATION_ID, start=DAY)
        partial.replace(path)
        print(
            f"  generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
    return path


def child_limit(dsn: str, path: Path, fmt: str, batch_size: int) -> dict:
    """(a): format every row as COPY text into per-batch files first, then time only loading."""
    mapping = load_appmetrica_mapping()
    file = AppMetricaFile(mapping.resource("events"), APPLICATION_ID, fmt, label=path.name)
    count = 0
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as tmp:
        batches = CopyBatches(Path(tmp), file.tables)
        for _entry, _line, record in file.records(path.open("rb")):
            batches.lines[file.table].append(file.line(record))
            count += 1
            if count % batch_size == 0:
                batches.flush()
        batches.flush()
        seconds = batches.load_seconds(Repository(open_connection(dsn)))
    return {"rows": count, "seconds": seconds}


def child_e2e(dsn: str, s3_url: str, key: str, batch_size: int) -> dict:
    """(b): the real loader, from S3 to PostgreSQL."""
    repo = Repository(open_connection(dsn))
    started = time.perf_counter()
    result = load_appmetrica_file(store_for(s3_url), key, repo, batch_size=batch_size)
    seconds = time.perf_counter() - started
    assert result.rejected == 0, result.reject_reasons
    return {
        "rows": result.rows_read,
        "inserted": sum(result.inserted.values()),
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
    }


def main() -> None:
    """Measure each format and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "json"], choices=["csv", "json"])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per format")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "limit":
            answer = child_limit(rest[0], Path(rest[1]), rest[2], args.batch_size)
        else:
            answer = child_e2e(rest[0], rest[1], rest[2], args.batch_size)
        print(json.dumps(answer))
        return

    results: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, int] = {}
    with postgres() as pg, moto_process() as s3_url:
        store = store_for(s3_url)
        for fmt in args.formats:
            path = events_file(args.rows, fmt)
            sizes[fmt] = path.stat().st_size
            key = raw_key(APPLICATION_ID, "events", DAY, fmt)
            store.upload_file(path, key)
            measured = results[fmt] = {"limit": [], "e2e": [], "peak": []}
            for attempt in range(args.repeat):
                limit = run_child(
                    __file__,
                    "limit",
                    fresh_database(pg, "bench_limit"),
                    str(path),
                    fmt,
                    batch_size=args.batch_size,
                )
                e2e = run_child(
                    __file__,
                    "e2e",
                    fresh_database(pg, "bench_e2e"),
                    s3_url,
                    key,
                    batch_size=args.batch_size,
                )
                assert limit["rows"] == e2e["rows"] == e2e["inserted"] == args.rows, (limit, e2e)
                measured["limit"].append(args.rows / limit["seconds"])
                measured["e2e"].append(args.rows / e2e["seconds"])
                measured["peak"].append(e2e["peak_mb"])
                print(
                    f"  {fmt} #{attempt + 1}: limit {measured['limit'][-1]:,.0f} rows/s, "
                    f"e2e {measured['e2e'][-1]:,.0f} rows/s "
                    f"({measured['e2e'][-1] / measured['limit'][-1]:.0%}), "
                    f"peak {e2e['peak_mb']:.0f} MB",
                    flush=True,
                )
    print()
    print(
        f"{args.rows:,} events rows; best of {args.repeat} interleaved runs each (shared machine)"
    )
    print(
        "| format | file size | idempotent limit (rows/s) | load_appmetrica_file e2e (rows/s) "
        "| e2e / limit | loader peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for fmt, measured in results.items():
        limit, e2e = max(measured["limit"]), max(measured["e2e"])
        print(
            f"| {fmt} | {sizes[fmt] / 1e6:,.0f} MB | {limit:,.0f} | {e2e:,.0f} | {e2e / limit:.0%} "
            f"| {max(measured['peak']):.0f} |"
        )


if __name__ == "__main__":
    main()
