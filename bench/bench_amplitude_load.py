"""Benchmark: the Amplitude load end to end against the raw-COPY and idempotent limits, same run.

For each size (default 100,000, 300,000 and 1,000,000 events) it generates a realistic
day archive with the sandbox generator, puts it in moto's S3 server (its own process),
and measures in child processes on fresh databases, in interleaved rounds:
  (r) raw:    the same events already mapped to COPY text, COPY'd batch by batch straight
              into the six tables (the physical limit; not idempotent);
  (a) limit:  the same COPY text through staging + INSERT ... ON CONFLICT DO NOTHING (the
              idempotent limit);
  (b) e2e:    `load_amplitude_file` from S3 into PostgreSQL (download, unzip, parse, map, load);
  (c) reload: `load_amplitude_file(..., reload=True)` of the same file into a database that
              holds it already (the re-run of a loaded day; inserts nothing).
It prints events/s of each (median of the rounds), the ratios, the loader's peak memory, the
server's durability settings and the machine's load average; each round's line also gives the
WAL each kind's timed part wrote (the staging path writes about a third more than raw COPY:
two kinds with the same WAL took the same path).

Usage: python bench/bench_amplitude_load.py [--events 100000 300000 1000000] [--rounds 3]
                                            [--batch-size N] [--fast] [--no-reload]
By default PostgreSQL runs with its default durability (fsync, synchronous_commit,
full_page_writes on); `--fast` measures on the test suite's fsync-off cluster instead.
Targets (issue 15): e2e >= 0.8 x raw and >= 1.0 x idempotent; reload >= 0.9 x idempotent;
peak memory <= 300 MB at 1,000,000 events and within 50 MB of the 100,000-event run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

from services import (
    ROOT,
    CopyBatches,
    WalMeter,
    add_server_flags,
    fresh_database,
    load_average,
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


def premap(archive: Path, directory: Path, batch_size: int) -> int:
    """Map the day's events once to per-batch COPY text files in `directory` (the limits'
    input; `manifest.json` lists them); returns the number of events."""
    mapping = amplitude_mapping()
    seen: set[str] = set()
    count = 0
    batches = CopyBatches(directory, mapping.tables)
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
    files = [[(table.spec.name, str(path)) for table, path in batch] for batch in batches.batches]
    (directory / "manifest.json").write_text(json.dumps({"events": count, "batches": files}))
    return count


def child_limit(dsn: str, directory: Path, raw: bool) -> dict:
    """(r)/(a): time only the loading of the COPY text files `premap` wrote."""
    mapping = amplitude_mapping()
    by_name = {table.spec.name: table for table in mapping.tables}
    manifest = json.loads((directory / "manifest.json").read_text())
    batches = CopyBatches(directory, mapping.tables)
    batches.batches = [
        [(by_name[name], Path(path)) for name, path in files] for files in manifest["batches"]
    ]
    conn = open_connection(dsn)
    ensure_month_partitions(conn, [DAY])
    wal = WalMeter(dsn)
    wal.start()
    seconds = batches.load_seconds(Repository(conn), raw=raw)
    return {"events": manifest["events"], "seconds": seconds, "wal_mb": wal.stop_mb()}


def child_e2e(dsn: str, s3_url: str, key: str, batch_size: int, reload: bool) -> dict:
    """(b)/(c): the real loader, from S3 to PostgreSQL (`reload`: timed on a second load)."""
    repo = Repository(open_connection(dsn))
    store = store_for(s3_url)  # a client the task's hook would have built: not timed
    if reload:
        load_amplitude_file(store, key, repo, batch_size=batch_size)
    wal = WalMeter(dsn)
    wal.start()
    started = time.perf_counter()
    result = load_amplitude_file(store, key, repo, batch_size=batch_size, reload=reload)
    seconds = time.perf_counter() - started
    return {
        "events": result.rows_read,
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
        "wal_mb": wal.stop_mb(),
    }


KINDS = ("raw", "limit", "e2e", "reload", "staged")


def main() -> None:
    """Measure every size and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size")
    parser.add_argument("--no-reload", action="store_true", help="skip the re-load measurement")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="measure e2e only (peak RSS of large days; no limits, no ratios)",
    )
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
            answer = child_limit(rest[0], Path(rest[1]), raw=kind == "raw")
        else:
            if kind == "staged":
                os.environ["ETL_OPTIMISTIC_COPY"] = "false"
            answer = child_e2e(rest[0], rest[1], rest[2], args.batch_size, kind == "reload")
        print(json.dumps(answer))
        return

    skipped = {"reload"} if args.no_reload else set()
    if not args.staged:
        skipped.add("staged")
    kinds = [kind for kind in KINDS if kind not in skipped]
    if args.memory_only:
        kinds = ["e2e"]
    rows = []
    with postgres(fast=args.fast) as pg, moto_process() as s3_url, ExitStack() as stack:
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
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            # the limits' COPY text is mapped once, before any round, and each limit's child only
            # loads it. (Until 32d66d8 each child mapped the day itself, and its mapping loop's
            # variable `raw` shadowed the parameter `raw`, so the "idempotent limit" ran raw
            # COPY; docs/benchmarks.md, "The idempotent limit measured raw COPY".) Removed
            # after this size's rounds (a 1M-event day is ~2 GB of text)
            premapped_dir = tempfile.TemporaryDirectory(prefix="bench-")
            stack.callback(premapped_dir.cleanup)
            premapped = Path(premapped_dir.name)
            if {"raw", "limit"} & set(kinds):
                started = time.perf_counter()
                premap(archive, premapped, args.batch_size)
                seconds = time.perf_counter() - started
                print(f"  mapped for the limits in {seconds:.0f}s", flush=True)
            for number in range(1, args.rounds + 1):  # interleaved rounds
                for kind in kinds:
                    dsn = fresh_database(pg, f"bench_{kind}")
                    where = [str(premapped)] if kind in ("raw", "limit") else [s3_url, key]
                    run = run_child(__file__, kind, dsn, *where, batch_size=args.batch_size)
                    assert run["events"] == events, (kind, run)
                    runs[kind].append(run)
                print(
                    f"  {events:>9,} events, round {number}: "
                    + ", ".join(
                        f"{kind} {events / runs[kind][-1]['seconds']:,.0f}/s "
                        f"({runs[kind][-1]['wal_mb']:,.0f} MB WAL)"
                        for kind in kinds
                    )
                    + f"; e2e peak {runs['e2e'][-1]['peak_mb']:.0f} MB; {load_average()}",
                    flush=True,
                )
            rate = {
                kind: events / statistics.median(r["seconds"] for r in runs[kind]) for kind in kinds
            }
            peak = max(
                run["peak_mb"]
                for kind in kinds
                if kind in ("e2e", "reload", "staged")
                for run in runs[kind]
            )
            rows.append((events, rate, peak))
            premapped_dir.cleanup()
    print()
    if args.memory_only:
        for events, rate, peak in rows:
            print(f"{events:,} events: e2e {rate['e2e']:,.0f}/s, peak RSS {peak:.0f} MB")
        return
    print(f"median of {args.rounds} interleaved rounds; {load_average()}")
    reload_head = " reload (events/s) | reload / idempotent |" if "reload" in kinds else ""
    print(
        "| events | raw COPY (events/s) | idempotent limit (events/s) | e2e (events/s) "
        "| e2e / raw | e2e / idempotent | idempotent / raw |" + reload_head + " peak RSS (MB) |"
    )
    print("|---:" * (8 + (2 if "reload" in kinds else 0)) + "|")
    for events, rate, peak in rows:
        raw, limit, e2e = rate["raw"], rate["limit"], rate["e2e"]
        reload_cells = (
            f" {rate['reload']:,.0f} | {rate['reload'] / limit:.2f} |" if "reload" in rate else ""
        )
        print(
            f"| {events:,} | {raw:,.0f} | {limit:,.0f} | {e2e:,.0f} | {e2e / raw:.2f} "
            f"| {e2e / limit:.2f} | {limit / raw:.2f} |{reload_cells} {peak:.0f} |"
        )
    if "staged" in kinds:
        for events, rate, _peak in rows:
            print(
                f"{events:,} events: e2e with every batch through staging "
                f"{rate['staged']:,.0f}/s; optimistic / staged {rate['e2e'] / rate['staged']:.2f}"
            )


if __name__ == "__main__":
    main()
