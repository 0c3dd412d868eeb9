"""Benchmark: the AppMetrica load end to end against the raw-COPY and idempotent limits, same run.

For each format (CSV and JSON) it writes an `events` file (default 1,000,000 rows) with the
sandbox generator (exactly what the sandbox serves), puts it in moto's S3 server (its own
process), and measures in child processes on fresh databases, in interleaved rounds:
  (r) raw:   the same rows already formatted as COPY text (cast, row_uuid computed), COPY'd
             batch by batch straight into appmetrica.events (the physical limit; not
             idempotent);
  (a) limit: the same COPY text through `Repository.copy_text` (COPY into staging + INSERT …
             ON CONFLICT DO NOTHING) in one transaction (the idempotent limit);
  (b) e2e:   `load_appmetrica_file` from S3 into PostgreSQL (download, parse, cast, map, load).
It prints rows/s of each (median of the rounds), the ratios, the loader's peak memory (RSS of
the child), the server's durability settings and the machine's load average.

Usage: python bench/bench_appmetrica_load.py [--rows 1000000] [--formats csv json]
                                             [--batch-size N] [--repeat 3] [--fast]
By default PostgreSQL runs with its default durability (fsync, synchronous_commit,
full_page_writes on); `--fast` measures on the test suite's fsync-off cluster instead.
Targets (issue 15): CSV e2e >= 0.8 x raw COPY; peak memory < 300 MB for either format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from services import (
    ROOT,
    CopyBatches,
    add_server_flags,
    fresh_database,
    load_average,
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


def child_limit(dsn: str, path: Path, fmt: str, batch_size: int, raw: bool) -> dict:
    """(r)/(a): format every row as COPY text into per-batch files first, then time only loading."""
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
        seconds = batches.load_seconds(Repository(open_connection(dsn)), raw=raw)
    return {"rows": count, "seconds": seconds}


def child_e2e(dsn: str, s3_url: str, key: str, batch_size: int) -> dict:
    """(b): the real loader, from S3 to PostgreSQL."""
    repo = Repository(open_connection(dsn))
    store = store_for(s3_url)  # a client the task's hook would have built: not timed
    started = time.perf_counter()
    result = load_appmetrica_file(store, key, repo, batch_size=batch_size)
    seconds = time.perf_counter() - started
    assert result.rejected == 0, result.reject_reasons
    return {
        "rows": result.rows_read,
        "inserted": sum(result.inserted.values()),
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
    }


KINDS = ("raw", "limit", "e2e")


def main() -> None:
    """Measure each format and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "json"], choices=["csv", "json"])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per format")
    parser.add_argument(
        "--staged",
        action="store_true",
        help="also measure e2e with ETL_OPTIMISTIC_COPY=false (every batch through staging)",
    )
    add_server_flags(parser)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind in ("raw", "limit"):
            answer = child_limit(rest[0], Path(rest[1]), rest[2], args.batch_size, kind == "raw")
        else:
            if kind == "staged":
                os.environ["ETL_OPTIMISTIC_COPY"] = "false"
            answer = child_e2e(rest[0], rest[1], rest[2], args.batch_size)
        print(json.dumps(answer))
        return

    results: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, int] = {}
    with postgres(fast=args.fast) as pg, moto_process() as s3_url:
        store = store_for(s3_url)
        for fmt in args.formats:
            path = events_file(args.rows, fmt)
            sizes[fmt] = path.stat().st_size
            key = raw_key(APPLICATION_ID, "events", DAY, fmt)
            store.upload_file(path, key)
            kinds = (*KINDS, "staged") if args.staged else KINDS
            measured = results[fmt] = {kind: [] for kind in (*kinds, "peak")}
            for attempt in range(args.repeat):
                for kind in kinds:
                    dsn = fresh_database(pg, f"bench_{kind}")
                    where = [str(path), fmt] if kind in ("raw", "limit") else [s3_url, key]
                    run = run_child(__file__, kind, dsn, *where, batch_size=args.batch_size)
                    assert run["rows"] == args.rows, (kind, run)
                    if kind in ("e2e", "staged"):
                        assert run["inserted"] == args.rows, run
                        measured["peak"].append(run["peak_mb"])
                    measured[kind].append(args.rows / run["seconds"])
                print(
                    f"  {fmt} #{attempt + 1}: "
                    + ", ".join(f"{kind} {measured[kind][-1]:,.0f} rows/s" for kind in kinds)
                    + f" (e2e/raw {measured['e2e'][-1] / measured['raw'][-1]:.2f}), "
                    f"peak {measured['peak'][-1]:.0f} MB; {load_average()}",
                    flush=True,
                )
    print()
    print(
        f"{args.rows:,} events rows; median of {args.repeat} interleaved rounds; {load_average()}"
    )
    print(
        "| format | file size | raw COPY (rows/s) | idempotent limit (rows/s) | e2e (rows/s) "
        "| e2e / raw | e2e / idempotent | idempotent / raw | loader peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt, measured in results.items():
        raw, limit, e2e = (statistics.median(measured[kind]) for kind in KINDS)
        print(
            f"| {fmt} | {sizes[fmt] / 1e6:,.0f} MB | {raw:,.0f} | {limit:,.0f} | {e2e:,.0f} "
            f"| {e2e / raw:.2f} | {e2e / limit:.2f} | {limit / raw:.2f} "
            f"| {max(measured['peak']):.0f} |"
        )
        if measured.get("staged"):
            staged = statistics.median(measured["staged"])
            print(
                f"{fmt}: e2e with every batch through staging {staged:,.0f} rows/s; "
                f"optimistic / staged {e2e / staged:.2f}"
            )


if __name__ == "__main__":
    main()
