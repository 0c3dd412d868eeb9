"""Benchmark: the API under concurrent clients on loopback, and with a hanging Yandex ID.

Starts a throwaway PostgreSQL, moto's S3 server, the Yandex ID stand-in and the API itself
(`uvicorn api.main:app`, one worker, in its own process), seeds 1,000 events_part rows, then
measures requests/s, p50 and p99 of
  - GET /db/events-part?limit=100 (a cached read token) and GET /health (no token),
    at 1, 10 and 50 concurrent clients, each making a fixed number of requests;
  - the same data read at 10 clients while Yandex ID hangs and 20 other clients keep sending
    tokens it has never seen (each such check waits for YANDEX_TIMEOUT_SECONDS).
Clients are threads with keep-alive connections, in this process: client and server share
the machine's two cores, so the numbers are a floor, good for comparisons within one run.

Usage: python bench/bench_api.py [--requests 300]
Targets (issue 14): /health no slower than a data endpoint (its probe is cached 1.5 s);
the cached-token p99 with Yandex ID hanging equal to the one without (within noise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from services import (
    BUCKET,
    ROOT,
    add_server_flags,
    fresh_database,
    moto_process,
    postgres,
    store_for,
)

from devtools.sandbox.postgres import free_port
from devtools.sandbox.yandex_id import DEMO_TOKENS, YandexIdSandbox

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "OAuth demo-write-token"}
DATA = "/db/events-part?limit=100"


@contextmanager
def api_process(dsn: str, s3_url: str, yandex_url: str) -> Iterator[str]:
    """`uvicorn api.main:app` on a free port, configured by environment variables."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "dags"), str(ROOT)]),
        "DB_DSN": dsn,
        "DB_MAXCONN": "10",
        "S3_ENDPOINT_URL": s3_url,
        "S3_BUCKET_NAME": BUCKET,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_REGION": "us-east-1",
        "YANDEX_LOGIN_URL": yandex_url,
        "YANDEX_TIMEOUT_SECONDS": "5",
        "AUTH_READ_ACCESS": "demo-reader",
        "AUTH_WRITE_ACCESS": "demo-writer",
        "LOGGING_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT / "bench",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def seed(url: str, rows: int = 1000) -> None:
    """`rows` events_part rows of 2024-05-01, inserted through the API."""
    data = [
        {
            "uuid": str(uuid.UUID(int=n + 1)),
            "event_time": f"2024-05-01T{n % 24:02d}:{n % 60:02d}:00",
            "event_type": "screen_view",
            "platform": "iOS",
            "user_id": n,
            "session_id": 1_700_000_000_000 + n,
            "language": "ru",
            "os_name": "ios",
            "os_version": "17.4",
        }
        for n in range(rows)
    ]
    response = httpx.post(url + "/db/events-part", headers=WRITE, json={"data": data}, timeout=60)
    response.raise_for_status()


def load(
    url: str, path: str, clients: int, per_client: int, headers: dict[str, str]
) -> dict[str, float]:
    """`clients` threads each making `per_client` requests: requests/s, p50, p99 (ms), errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            http.get(path)  # connect (and check the token) before the clock starts
            start.wait()
            for _ in range(per_client):
                began = time.perf_counter()
                status = http.get(path).status_code
                mine.append(time.perf_counter() - began)
                failed += status != 200
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


@contextmanager
def unknown_token_storm(url: str, clients: int = 20) -> Iterator[list[int]]:
    """`clients` threads sending never-seen tokens until the block ends; yields their statuses."""
    stop = threading.Event()
    statuses: list[int] = []

    def storm() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                token = {"Authorization": f"OAuth storm-{uuid.uuid4().hex}"}
                statuses.append(http.get(DATA, headers=token).status_code)

    threads = [threading.Thread(target=storm, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # let the checks pile up at the hanging Yandex ID
    try:
        yield statuses
    finally:
        stop.set()


def row(name: str, clients: int, result: dict[str, float]) -> str:
    """One line of the results table."""
    return (
        f"| {name} | {clients} | {result['rps']:.0f} | {result['p50']:.1f} | "
        f"{result['p99']:.1f} | {result['errors']:.0f} |"
    )


def main() -> int:
    """Run the scenarios and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario")
    add_server_flags(parser)
    args = parser.parse_args()
    lines = [
        "| scenario | clients | req/s | p50 ms | p99 ms | non-200 |",
        "|---|---|---|---|---|---|",
    ]
    with (
        postgres(fast=args.fast) as pg,
        moto_process() as s3_url,
        YandexIdSandbox(DEMO_TOKENS, hang_seconds=3600) as yandex,
    ):
        dsn = fresh_database(pg, "bench_api")
        store_for(s3_url)
        with api_process(dsn, s3_url, yandex.url) as url:
            seed(url)
            for clients in (1, 10, 50):
                per_client = max(5, args.requests // clients)
                for name, path, headers in (("data", DATA, READ), ("health", "/health", {})):
                    result = load(url, path, clients, per_client, headers)
                    lines.append(row(f"{name} `{path}`", clients, result))
                    print(lines[-1], flush=True)
            baseline = load(url, DATA, 10, max(5, args.requests // 10), READ)
            lines.append(row("data, Yandex ID answering", 10, baseline))
            print(lines[-1], flush=True)
            yandex.set_mode("hang")
            before = yandex.requests
            with unknown_token_storm(url) as storm:
                hanging = load(url, DATA, 10, max(5, args.requests // 10), READ)
                health = load(url, "/health", 10, max(5, args.requests // 10), {})
                calls = yandex.requests - before
            lines.append(row("data, Yandex ID hanging + 20 unknown-token clients", 10, hanging))
            lines.append(row("health, same", 10, health))
            print(lines[-2], flush=True)
            print(lines[-1], flush=True)
            yandex.set_mode("ok")
            after = load(url, DATA, 10, max(5, args.requests // 10), READ)
            lines.append(row("data, Yandex ID answering again", 10, after))
            print(lines[-1], flush=True)
            print(
                f"Yandex ID calls while it hung: {calls} (at most MAX_CONCURRENT_CHECKS in "
                f"flight); unknown-token answers: {len(storm)} (503 after the timeout)",
                flush=True,
            )
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
