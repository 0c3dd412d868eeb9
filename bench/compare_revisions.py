"""Benchmark: the AppMetrica load of two revisions of the loader, in alternating rounds.

Separate benchmark runs on these machines differ by ±10 % (the machine, not the code), so a
change worth 5-15 % cannot be told from noise by comparing two runs of
`bench_appmetrica_load.py`. This script measures both revisions in one run: the loader of
`--base` (a git revision, exported to a temporary directory) and of the working tree load
the same S3 object into fresh databases of one PostgreSQL, round after round, in
alternating order (base first in odd rounds, working tree first in even ones), each load in
a child process of its own. It prints every load and then, per revision, the median rows/s
and loader CPU, the median of the per-round ratios (working tree / base) and in how many
rounds the working tree was faster.

Only `plugins/` (the `dwh_helper` package) comes from `--base`: the schema, the generator and
the services are the working tree's, so compare revisions whose schema is the same.

Usage: python bench/compare_revisions.py --base HEAD~3 [--rows 300000] [--format csv]
                                         [--rounds 8] [--fast]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if "--child" in sys.argv:  # bind the revision's package before `services` puts the working tree's
    sys.path.insert(0, sys.argv[-1])  # first on the path (the child's last argument)
    import dwh_helper  # noqa: F401

from bench_appmetrica_load import APPLICATION_ID, DAY, events_file  # noqa: E402
from services import (  # noqa: E402
    ROOT,
    add_server_flags,
    fresh_database,
    load_average,
    moto_process,
    peak_rss_mb,
    postgres,
    store_for,
)

from dwh_helper.pipeline.appmetrica import raw_key  # noqa: E402

WORKING_TREE = "working tree"


def export_plugins(revision: str, into: Path) -> Path:
    """`plugins/` of `revision` unpacked under `into`; returns that plugins directory."""
    archive = into / "plugins.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "plugins"],
            check=True,
            stdout=out,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into / "plugins"


def child(dsn: str, s3_url: str, key: str) -> dict:
    """One load from S3 with whichever `dwh_helper` is first on the path."""
    import dwh_helper
    from dwh_helper.dwh.repository import Repository, open_connection
    from dwh_helper.pipeline.appmetrica import load_appmetrica_file

    repo = Repository(open_connection(dsn))
    store = store_for(s3_url)  # built before the clock starts, as a task's hook would be
    started, cpu = time.perf_counter(), time.process_time()
    result = load_appmetrica_file(store, key, repo)
    return {
        "package": dwh_helper.__file__,
        "rows": sum(result.inserted.values()),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "peak_mb": peak_rss_mb(),
    }


def run_load(plugins: Path, dsn: str, s3_url: str, key: str) -> dict:
    """One load in a child process whose `dwh_helper` is the one under `plugins`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugins), str(ROOT)]))
    output = subprocess.run(
        [sys.executable, __file__, "--child", dsn, s3_url, key, str(plugins)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    answer = json.loads(output.strip().splitlines()[-1])
    if not answer["package"].startswith(str(plugins)):  # the path must pick the revision
        raise RuntimeError(f"the child loaded {answer['package']}, not the one in {plugins}")
    return answer


def main() -> None:
    """Measure both revisions in alternating rounds and print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--base", help="the git revision to compare the working tree with")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--format", default="csv", choices=["csv", "json"])
    parser.add_argument("--rounds", type=int, default=8)
    add_server_flags(parser)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child[:3])))
        return
    if not args.base:
        parser.error("--base is required: the revision to compare the working tree with")

    path = events_file(args.rows, args.format)
    key = raw_key(APPLICATION_ID, "events", DAY, args.format)
    measured: dict[str, list[dict]] = {args.base: [], WORKING_TREE: []}
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        trees = {args.base: export_plugins(args.base, Path(tmp)), WORKING_TREE: ROOT / "plugins"}
        with postgres(fast=args.fast) as pg, moto_process() as s3_url:
            store_for(s3_url).upload_file(path, key)
            order = list(trees)
            for round_number in range(1, args.rounds + 1):
                for name in order if round_number % 2 else order[::-1]:
                    dsn = fresh_database(pg, "bench_compare")
                    run = run_load(trees[name], dsn, s3_url, key)
                    assert run["rows"] == args.rows, (name, run)
                    measured[name].append(run)
                    print(
                        f"  round {round_number} {name}: {args.rows / run['seconds']:,.0f} rows/s, "
                        f"CPU {run['cpu']:.2f} s, peak {run['peak_mb']:.0f} MB; {load_average()}",
                        flush=True,
                    )
    print()
    print(f"{args.rows:,} {args.format} rows, {args.rounds} alternating rounds; {load_average()}")
    print("| revision | rows/s (median) | loader CPU s (median) | peak RSS MB (max) |")
    print("|---|---:|---:|---:|")
    for name, runs in measured.items():
        rate = statistics.median(args.rows / run["seconds"] for run in runs)
        cpu = statistics.median(run["cpu"] for run in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.2f} | {max(run['peak_mb'] for run in runs):.0f} |")
    ratios = [
        base["seconds"] / new["seconds"]
        for base, new in zip(measured[args.base], measured[WORKING_TREE], strict=True)
    ]
    faster = sum(ratio > 1 for ratio in ratios)
    print(
        f"working tree / {args.base}: median of the per-round speed ratios "
        f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
        f"faster in {faster} of {len(ratios)} rounds"
    )


if __name__ == "__main__":
    main()
