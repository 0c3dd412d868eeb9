"""`python -m devtools.sandbox appmetrica [...]`: serve the Logs API sandbox, or write a file.

`... appmetrica --port 8082` serves until Ctrl-C / SIGTERM;
`... appmetrica --write-events FILE --rows 1000000 --fmt csv` writes a file and exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import date

from devtools.sandbox.appmetrica.generator import write_events_file
from devtools.sandbox.appmetrica.server import DEMO_TOKEN, AppMetricaFaults, AppMetricaSandbox
from dwh_helper.sources.appmetrica_parse import DEFAULT_FIELDS


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.sandbox appmetrica [...]`: serve the sandbox, or write a file."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox appmetrica",
        description="A local AppMetrica Logs API with generated data.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token", default=DEMO_TOKEN, help="the OAuth token clients must send")
    parser.add_argument(
        "--application-ids", default="1111", help="comma-separated application ids served"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--events-per-day",
        type=int,
        default=None,
        help="rows per day (default 500 when serving, 100000 with --write-events)",
    )
    parser.add_argument("--ready-after", type=int, default=2, help="202 answers before the 200")
    parser.add_argument("--max-rows-per-part", type=int, default=None)
    parser.add_argument("--server-error-first", type=int, default=0)
    parser.add_argument("--status-disabled", action="store_true")
    parser.add_argument("--write-events", metavar="FILE", help="write a file and exit")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for --write-events")
    parser.add_argument("--fmt", choices=("csv", "json"), default="csv")
    parser.add_argument("--resource", choices=tuple(DEFAULT_FIELDS), default="events")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--bom", action="store_true", help="start the file with a UTF-8 BOM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    application_ids = [item.strip() for item in args.application_ids.split(",") if item.strip()]

    if args.write_events:
        per_day = args.events_per_day or 100_000
        size = write_events_file(
            args.write_events,
            args.fmt,
            args.rows,
            resource=args.resource,
            application_id=application_ids[0],
            start=args.start,
            events_per_day=per_day,
            seed=args.seed,
            use_utf8_bom=args.bom,
        )
        print(f"wrote {args.rows} {args.resource} rows ({size} bytes) to {args.write_events}")
        return 0

    faults = AppMetricaFaults(
        ready_after=args.ready_after,
        max_rows_per_part=args.max_rows_per_part,
        server_error_first=args.server_error_first,
        status_enabled=not args.status_disabled,
    )
    sandbox = AppMetricaSandbox(
        args.token,
        application_ids,
        seed=args.seed,
        events_per_day=args.events_per_day or 500,
        faults=faults,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox:
        print(
            f"AppMetrica Logs API sandbox on {sandbox.url} — applications "
            f"{', '.join(application_ids)}; Ctrl-C to stop",
            flush=True,
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0
