"""`python -m devtools.demo`: the whole pipeline on this machine, with nothing configured.

`run` (the default) starts a throwaway PostgreSQL (the DWH), moto's S3 server and the
sandbox upstreams (Amplitude `web` + `mobile`, AppMetrica, Yandex ID), runs the DAGs
`amplitude_events`, `appmetrica_events` and `user_properties` with `airflow dags test`
(real Airflow, sqlite metadata, connections as AIRFLOW_CONN_* variables) for two recent
days, prints what landed where, re-runs the loads to show nothing changes, and cleans up.

`api` starts the same local services, loads one sandbox day into the DWH, and serves the
companion API on http://127.0.0.1:8000 until Ctrl-C; the Yandex ID stand-in accepts the
demo tokens `demo-read-token` and `demo-write-token`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "dwh-raw"
DAGS = ("amplitude_events", "appmetrica_events", "user_properties")


def say(message: str) -> None:
    """One progress line, flushed at once."""
    print(message, flush=True)


@contextmanager
def step(label: str) -> Iterator[None]:
    """Print `label ...` then `done (N.Ns)` around a block."""
    print(f"  {label} ...", end="", flush=True)
    started = time.perf_counter()
    yield
    print(f" done ({time.perf_counter() - started:.1f}s)", flush=True)


def demo_days(now: datetime | None = None) -> tuple[date, date]:
    """Two recent UTC days whose Amplitude data is complete (ended more than 2 hours ago)."""
    now = now or datetime.now(UTC)
    last = (now - timedelta(hours=2)).date() - timedelta(days=1)
    return last - timedelta(days=1), last


@dataclass
class LocalStack:
    """The services of the demo and where they listen."""

    dwh_dsn: str
    s3_url: str
    amplitude: Any
    appmetrica: Any
    yandex: Any
    workdir: Path
    dag_seconds: dict[str, float] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """Airflow and library settings pointing at the local services."""
        params = psycopg.conninfo.conninfo_to_dict(self.dwh_dsn)
        env = {
            "AIRFLOW_HOME": str(self.workdir / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.workdir}/airflow/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "dags"), str(ROOT)]),
            "AIRFLOW_CONN_DWH_POSTGRES": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": params["host"],
                    "port": int(params["port"]),
                    "login": params["user"],
                    "schema": params["dbname"],
                }
            ),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "demo",
                    "password": "demo",
                    "extra": {"endpoint_url": self.s3_url, "region_name": "us-east-1"},
                }
            ),
            "AIRFLOW_CONN_APPMETRICA_DEFAULT": json.dumps(
                {
                    "conn_type": "appmetrica",
                    "host": self.appmetrica.url,
                    "password": self.appmetrica.token,
                    "extra": {
                        "application_ids": ",".join(self.appmetrica.application_ids),
                        "poll_interval": 0.2,
                        "poll_timeout": 120,
                    },
                }
            ),
            "S3_BUCKET_NAME": BUCKET,
            "S3_ENDPOINT_URL": self.s3_url,
            "S3_ACCESS_KEY_ID": "demo",
            "S3_SECRET_ACCESS_KEY": "demo",
            "DB_DSN": self.dwh_dsn,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
        }
        for project in self.amplitude.projects:
            env[f"AIRFLOW_CONN_AMPLITUDE_{project.name.upper()}"] = json.dumps(
                {
                    "conn_type": "amplitude",
                    "host": self.amplitude.url,
                    "login": project.api_key,
                    "password": project.secret_key,
                    "extra": {"project_id": project.project_id},
                }
            )
            env[f"AMPLITUDE_{project.name.upper()}_CLIENT_ID"] = project.api_key
            env[f"AMPLITUDE_{project.name.upper()}_SECRET_KEY"] = project.secret_key
        env["AMPLITUDE_BASE_URL"] = self.amplitude.url
        env["APPMETRICA_BASE_URL"] = self.appmetrica.url
        env["APPMETRICA_TOKEN"] = self.appmetrica.token
        env["APPMETRICA_APPLICATION_ID"] = ",".join(self.appmetrica.application_ids)
        env["APPMETRICA_POLL_INTERVAL_SECONDS"] = "0.2"
        env["YANDEX_LOGIN_URL"] = self.yandex.url
        env["AUTH_READ_ACCESS"] = "demo-reader"
        env["AUTH_WRITE_ACCESS"] = "demo-writer"
        return env


@contextmanager
def local_stack(workdir: Path, events_per_hour: int = 60) -> Iterator[LocalStack]:
    """Start every local service; stop them all on exit."""
    from devtools.sandbox.amplitude import AmplitudeSandbox
    from devtools.sandbox.appmetrica import AppMetricaSandbox
    from devtools.sandbox.postgres import TemporaryPostgres
    from devtools.sandbox.s3 import LocalS3
    from devtools.sandbox.yandex_id import YandexIdSandbox
    from dwh_helper.dwh.repository import open_connection
    from dwh_helper.dwh.schema import migrate

    with ExitStack() as stack:
        with step("starting a throwaway PostgreSQL (the DWH)"):
            pg = stack.enter_context(TemporaryPostgres())
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute("CREATE DATABASE dwh")
            dsn = pg.dsn_for("dwh")
            with open_connection(dsn) as conn:
                migrate(conn)
        with step("starting moto's S3 server"):
            s3 = stack.enter_context(LocalS3())
            s3.create_bucket(BUCKET)
        with step("starting the Amplitude, AppMetrica and Yandex ID sandboxes"):
            amplitude = stack.enter_context(AmplitudeSandbox(events_per_hour=events_per_hour))
            appmetrica = stack.enter_context(AppMetricaSandbox(events_per_day=2000))
            yandex = stack.enter_context(YandexIdSandbox())
        yield LocalStack(dsn, s3.endpoint_url, amplitude, appmetrica, yandex, workdir)


def airflow(stack: LocalStack, *args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    """Run the `airflow` command of this environment against the demo's settings."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    env = {**os.environ, **stack.environment()}
    result = subprocess.run(command, env=env, capture_output=quiet, text=True)
    if result.returncode != 0:
        tail = "\n".join(
            (result.stdout or "").splitlines()[-40:] + (result.stderr or "").splitlines()[-20:]
        )
        raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{tail}")
    return result


def run_dag(stack: LocalStack, dag_id: str, run_date: date, conf: dict[str, Any]) -> float:
    """`airflow dags test` one DAG; returns its duration in seconds."""
    started = time.perf_counter()
    airflow(stack, "dags", "test", dag_id, run_date.isoformat(), "-c", json.dumps(conf))
    seconds = time.perf_counter() - started
    stack.dag_seconds[dag_id] = stack.dag_seconds.get(dag_id, 0.0) + seconds
    return seconds


def table_counts(dsn: str) -> dict[str, int]:
    """Rows per DWH table (the eight company tables, appmetrica.*, the journal)."""
    with psycopg.connect(dsn) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname IN ('public', 'appmetrica') "
                "AND tablename NOT LIKE 'events_part_%' AND tablename <> 'schema_migrations' "
                "ORDER BY schemaname DESC, tablename"
            )
        ]
        return {
            table.removeprefix("public."): conn.execute(
                f"SELECT count(*) FROM {table}"  # noqa: S608 - names from pg_tables
            ).fetchone()[0]
            for table in tables
        }


def s3_summary(stack: LocalStack) -> dict[str, tuple[int, int]]:
    """(objects, bytes) per raw prefix (down to source / application + resource)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=stack.s3_url,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )
    summary: dict[str, tuple[int, int]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            parts = item["Key"].split("/")
            depth = 3 if parts[1] == "amplitude" else 4
            prefix = "/".join(parts[:depth]) + "/"
            count, size = summary.get(prefix, (0, 0))
            summary[prefix] = (count + 1, size + item["Size"])
    return dict(sorted(summary.items()))


def rejects_summary(dsn: str) -> list[tuple[str, str, int]]:
    """(source, reason, count) of load_rejects, most frequent first."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT source, regexp_replace(reason, '\\(value .*\\)$', '(value ...)'), count(*) "
            "FROM load_rejects GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 12"
        ).fetchall()


def unknown_keys(dsn: str) -> list[tuple[str, int]]:
    """User-property keys seen in tmp_user_properties that field_mappings.yaml does not map."""
    from dwh_helper.transform.field_mapping import load_field_mappings

    known = load_field_mappings().known_keys()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT key, count(*) FROM tmp_user_properties, "
            "jsonb_object_keys(user_properties_json) AS key GROUP BY key ORDER BY 2 DESC"
        ).fetchall()
    return [(key, count) for key, count in rows if key not in known]


def print_summary(stack: LocalStack, counts: dict[str, int]) -> None:
    """The at-a-glance summary: tables, S3, rejects, unknown keys, DAG timings."""
    say("\nRows per DWH table")
    width = max(map(len, counts)) + 2
    for table, count in counts.items():
        say(f"  {table:<{width}} {count:>9,}")
    say("\nRaw objects in s3://" + BUCKET)
    for prefix, (objects, size) in s3_summary(stack).items():
        say(f"  {prefix:<44} {objects:>4} object(s) {size / 1e6:>8.2f} MB")
    say("\nRejected records (load_rejects), by reason")
    rejects = rejects_summary(stack.dwh_dsn)
    for source, reason, count in rejects:
        say(f"  {count:>6,}  {source}: {reason}")
    if not rejects:
        say("  none")
    say("\nUser-property keys not in field_mappings.yaml (extend the mapping to keep them)")
    for key, count in unknown_keys(stack.dwh_dsn)[:12]:
        say(f"  {count:>6,}  {key}")
    say("\nTime per DAG")
    for dag_id, seconds in stack.dag_seconds.items():
        say(f"  {dag_id:<20} {seconds:6.1f}s")


def run(args: argparse.Namespace) -> int:
    """The demo pipeline."""
    first, last = demo_days()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="dwh-demo-"))
    say(f"DWH Helper demo: {first} and {last} (UTC), work dir {workdir}")
    try:
        with local_stack(workdir, args.events_per_hour) as stack:
            with step("preparing Airflow (sqlite metadata DB)"):
                airflow(stack, "db", "migrate")
            conf = {"start": first.isoformat(), "end": last.isoformat()}
            for dag_id in args.dags:
                dag_conf = conf if dag_id != "user_properties" else {}
                with step(f"airflow dags test {dag_id}"):
                    run_dag(stack, dag_id, last, dag_conf)
            counts = table_counts(stack.dwh_dsn)
            print_summary(stack, counts)
            say("\nRe-running the loads from S3 (must change nothing)")
            with step("airflow dags test amplitude_events (reload_from_s3)"):
                run_dag(
                    stack,
                    "amplitude_events",
                    last + timedelta(days=1),
                    {**conf, "reload_from_s3": True},
                )
            if "appmetrica_events" in args.dags:
                with step("airflow dags test appmetrica_events (reload_from_s3)"):
                    run_dag(
                        stack,
                        "appmetrica_events",
                        last + timedelta(days=1),
                        {**conf, "reload_from_s3": True},
                    )
            again = table_counts(stack.dwh_dsn)
            changed = {
                table: (counts[table], again[table])
                for table in counts
                if counts[table] != again[table] and table != "load_log"
            }
            if changed:
                say(f"  CHANGED: {changed}")
                return 1
            say(
                f"  unchanged: every table has the same row count "
                f"(load_log grew {counts.get('load_log', 0)} → {again.get('load_log', 0)})"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(
        f"\nDemo finished in {time.perf_counter() - started:.0f}s; every service stopped and "
        "its files removed."
    )
    return 0


def serve_api(args: argparse.Namespace) -> int:
    """Local services + one loaded sandbox day + the API on http://127.0.0.1:<port>."""
    import uvicorn

    workdir = Path(tempfile.mkdtemp(prefix="dwh-demo-api-"))
    try:
        with local_stack(workdir, args.events_per_hour) as stack:
            os.environ.update(stack.environment())
            with step("loading one sandbox day (Amplitude web) into the DWH"):
                _load_one_day(stack)
            say(f"\nAPI on http://127.0.0.1:{args.port}/docs — try:")
            say(
                f"  curl -H 'Authorization: OAuth demo-read-token' "
                f"'http://127.0.0.1:{args.port}/db/events-part?limit=3'"
            )
            say("Tokens: demo-read-token (read), demo-write-token (read + write). Ctrl-C stops.")
            from api.main import create_app

            uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="info")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _load_one_day(stack: LocalStack) -> None:
    from dwh_helper.config import S3Settings
    from dwh_helper.dwh.repository import Repository, open_connection
    from dwh_helper.pipeline.amplitude import extract_amplitude, load_amplitude_file
    from dwh_helper.sources.amplitude import AmplitudeClient
    from dwh_helper.storage.s3 import store_from_settings

    store = store_from_settings(S3Settings())
    project = stack.amplitude.projects[0]
    day = demo_days()[1]
    with AmplitudeClient(
        project.api_key, project.secret_key, project=project.name, base_url=stack.amplitude.url
    ) as client:
        keys = extract_amplitude(client, store, project.name, day).keys
    with open_connection(stack.dwh_dsn) as conn:
        for key in keys:
            load_amplitude_file(store, key, Repository(conn))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["run", "api"], default="run")
    parser.add_argument(
        "--events-per-hour",
        type=int,
        default=60,
        help="Amplitude sandbox volume per project and hour (default 60)",
    )
    parser.add_argument("--port", type=int, default=8000, help="API port (api command)")
    parser.add_argument(
        "--dags",
        nargs="+",
        choices=DAGS,
        default=list(DAGS),
        help="DAGs to run, in this order (default: all three)",
    )
    args = parser.parse_args(argv)
    from dwh_helper.config import configure_logging

    configure_logging("WARNING")
    return run(args) if args.command == "run" else serve_api(args)


if __name__ == "__main__":
    sys.exit(main())
