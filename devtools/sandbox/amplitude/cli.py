"""`python -m devtools.sandbox amplitude [...]`: serve the Export API sandbox until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import UTC, date, datetime

from devtools.sandbox.amplitude.protocol import DEFAULT_EVENTS_PER_PART, SandboxProject
from devtools.sandbox.amplitude.server import AmplitudeFaults, AmplitudeSandbox
from dwh_helper.sources.amplitude import EXPORT_PATH


def _parse_project(text: str) -> SandboxProject:
    try:
        name, api_key, secret_key, project_id = text.split(":")
        return SandboxProject(name, api_key, secret_key, int(project_id))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--project {text!r}: expected NAME:API_KEY:SECRET_KEY:PROJECT_ID, "
            "e.g. web:my-key:my-secret:374182"
        ) from None


def _parse_hour(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%dT%H").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYYMMDDTHH") from None


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m devtools.sandbox amplitude`."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox amplitude",
        description="A local Amplitude Export API (GET /api/2/export) serving generated events.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 = any)")
    parser.add_argument("--seed", type=int, default=42, help="data seed (default 42)")
    parser.add_argument("--events-per-hour", type=int, default=40, help="mean events per hour")
    parser.add_argument(
        "--events-per-part",
        type=int,
        default=DEFAULT_EVENTS_PER_PART,
        help="events per archive entry before a new #n part starts",
    )
    parser.add_argument(
        "--project",
        action="append",
        type=_parse_project,
        default=None,
        metavar="NAME:API_KEY:SECRET_KEY:PROJECT_ID",
        help="a project to serve (repeatable; default: web and mobile)",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--rate-limit-first",
        type=int,
        default=0,
        metavar="K",
        help="answer the first K export calls with 429",
    )
    faults.add_argument(
        "--retry-after",
        type=int,
        default=1,
        metavar="SECONDS",
        help="Retry-After of those 429s (default 1)",
    )
    faults.add_argument(
        "--server-error-first",
        type=int,
        default=0,
        metavar="K",
        help="then answer K calls with 500/503",
    )
    faults.add_argument(
        "--non-zip-first",
        type=int,
        default=0,
        metavar="K",
        help="then answer K calls with a 200 HTML page",
    )
    faults.add_argument(
        "--truncate-first",
        type=int,
        default=0,
        metavar="K",
        help="answer K would-be 200s with half an archive",
    )
    faults.add_argument(
        "--disconnect-first",
        type=int,
        default=0,
        metavar="K",
        help="drop the connection halfway through K would-be 200s",
    )
    faults.add_argument(
        "--max-window-hours",
        type=int,
        default=None,
        metavar="N",
        help="answer 400 (over 4GB) for windows longer than N hours",
    )
    faults.add_argument(
        "--too-large-hour",
        type=_parse_hour,
        action="append",
        default=[],
        metavar="YYYYMMDDTHH",
        help="an hour that always answers 400",
    )
    faults.add_argument(
        "--empty-day",
        type=_parse_day,
        action="append",
        default=[],
        metavar="YYYY-MM-DD",
        help="a day without data (404)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C / SIGTERM; prints its URL and the projects' keys."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    faults = AmplitudeFaults(
        rate_limit_first=args.rate_limit_first,
        retry_after=args.retry_after,
        server_error_first=args.server_error_first,
        truncate_first=args.truncate_first,
        non_zip_first=args.non_zip_first,
        disconnect_first=args.disconnect_first,
        max_window_hours=args.max_window_hours,
        too_large_hours=set(args.too_large_hour),
        empty_days=set(args.empty_day),
    )
    sandbox = AmplitudeSandbox(
        args.project,
        seed=args.seed,
        events_per_hour=args.events_per_hour,
        events_per_part=args.events_per_part,
        faults=faults,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox:
        print(f"Amplitude sandbox listening on {sandbox.url}", flush=True)
        print(f"  export: {sandbox.url}{EXPORT_PATH}?start=YYYYMMDDTHH&end=YYYYMMDDTHH")
        for project in sandbox.projects:
            print(
                f"  project {project.name}: api_key={project.api_key} "
                f"secret_key={project.secret_key} project_id={project.project_id}"
            )
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print("Amplitude sandbox stopped.", file=sys.stderr)
    return 0
