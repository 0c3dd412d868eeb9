"""The production topology from processes: Airflow with the CeleryExecutor, started by the test.

`AirflowStack` runs `airflow api-server`, `scheduler`, `dag-processor`, `triggerer` and two
`airflow celery worker --concurrency 2`, with the metadata DB in a database of the test
PostgreSQL and a Redis-protocol broker of the project's own (`redis_broker.py`, fakeredis).
Every process gets the same environment (connections as AIRFLOW_CONN_* variables), its
output goes to a log file, and `stop()` ends exactly the processes it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:`port` accepts connections (or fail, naming the port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f}s")


def sqlalchemy_url(dsn: str, scheme: str = "postgresql+psycopg") -> str:
    """A libpq DSN as a SQLAlchemy URL."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    host = params.get("host", "127.0.0.1")
    return f"{scheme}://{user}{password}@{host}:{params.get('port', 5432)}/{params['dbname']}"


class AirflowStack:
    """Airflow's production processes around one metadata database and one broker."""

    def __init__(self, home: Path, metadata_dsn: str, extra_env: Mapping[str, str]) -> None:
        self.home = home
        self.metadata_dsn = metadata_dsn
        self.api_port = free_port()
        self.broker_port = free_port()
        self.logs = home / "process-logs"
        self.processes: dict[str, subprocess.Popen] = {}
        url = sqlalchemy_url(metadata_dsn)
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT / 'dags'}:{ROOT}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # Paused until `unpause_without_schedule`: no scheduled run of "yesterday" before
            # the test's own runs.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                f"http://127.0.0.1:{self.api_port}/execution/"
            ),
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.broker_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            # Parse each file once: re-parsing costs CPU and would re-plan the schedule.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "86400",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__API__WORKERS": "1",
            # The api-server answers slowly while 6 processes start on 2 cores.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra_env,
        }

    # -- processes -------------------------------------------------------------------------

    def airflow_all(self, *commands: tuple[str, ...], timeout: float = 300) -> None:
        """Run several `airflow` CLI commands at once (each imports Airflow for seconds)."""
        running = [
            subprocess.Popen(
                [str(BIN / "airflow"), *args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for args in commands
        ]
        failures = []
        for args, process in zip(commands, running, strict=True):
            output, _ = process.communicate(timeout=timeout)
            if process.returncode != 0:
                failures.append(
                    f"airflow {' '.join(args)} exited {process.returncode}:\n{output[-3000:]}"
                )
        if failures:
            raise RuntimeError("\n".join(failures))

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run one `airflow` CLI command in the stack's environment; its output, or an error."""
        result = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def spawn(self, name: str, *command: str) -> subprocess.Popen:
        """Start one long-running process (its own process group), output to its log file."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            list(command),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self) -> AirflowStack:
        """Broker, metadata DB migration, then every Airflow process; waits for the API."""
        broker = self.spawn(
            "broker",
            sys.executable,
            str(Path(__file__).with_name("redis_broker.py")),
            str(self.broker_port),
        )
        wait_for_port(self.broker_port, 30, broker)
        self.airflow("db", "migrate", timeout=600)
        # Every process at once: each spends most of its start importing Airflow.
        airflow = str(BIN / "airflow")
        api = self.spawn("api-server", airflow, "api-server", "--port", str(self.api_port))
        self.spawn("scheduler", airflow, "scheduler")
        self.spawn("dag-processor", airflow, "dag-processor")
        self.spawn("triggerer", airflow, "triggerer")
        for number in (1, 2):
            self.spawn(
                f"worker{number}",
                airflow,
                "celery",
                "worker",
                "--concurrency",
                "2",
                "--celery-hostname",
                f"worker{number}@%h",
                "--skip-serve-logs",
            )
        wait_for_port(self.api_port, 240, api)
        return self

    def check_alive(self) -> None:
        """Fail, with the end of its log, when a stack process has died."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of one process's log."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """SIGTERM each process group this stack started, then SIGKILL what is left."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # -- metadata --------------------------------------------------------------------------

    def query(self, statement: str, *params: Any) -> list[tuple]:
        """Rows of a query on the metadata database."""
        with psycopg.connect(self.metadata_dsn, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def wait_until_parsed(self, dag_ids: set[str], timeout: float = 240) -> None:
        """Wait until the dag-processor has serialized every DAG in `dag_ids`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                found = {row[0] for row in self.query("SELECT dag_id FROM serialized_dag")}
            except psycopg.Error:
                found = set()
            if dag_ids <= found:
                return
            time.sleep(1)
        raise TimeoutError(
            f"DAGs not parsed after {timeout:.0f}s:\n{self.log_tail('dag-processor')}"
        )

    def unpause_without_schedule(self, dag_ids: set[str]) -> None:
        """Unpause `dag_ids` with no next scheduled run: only triggered and asset runs start.

        Unpausing a DAG with a cron timetable makes the scheduler run its latest interval
        at once; the test's runs are the only ones wanted, so the next run is cleared first
        (the dag-processor does not re-parse, see MIN_FILE_PROCESS_INTERVAL).
        """
        deadline = time.monotonic() + 60
        while True:
            updated = self.query(
                "UPDATE dag SET is_paused = false, next_dagrun = NULL, "
                "next_dagrun_create_after = NULL, next_dagrun_data_interval_start = NULL, "
                "next_dagrun_data_interval_end = NULL WHERE dag_id = ANY(%s) RETURNING dag_id",
                list(dag_ids),
            )
            if {row[0] for row in updated} >= dag_ids:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {updated} of {sorted(dag_ids)} are in the dag table")
            time.sleep(1)

    def wait_until_idle(self, timeout: float, settle: float = 3) -> None:
        """Wait until no DAG run is queued or running and no asset event waits for a run."""
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            busy = self.query("SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')")[
                0
            ][0]
            waiting = self.query("SELECT count(*) FROM asset_dag_run_queue")[0][0]
            if busy == 0 and waiting == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return
            else:
                idle_since = None
            time.sleep(1)
        runs = self.query("SELECT dag_id, run_id, state FROM dag_run ORDER BY id")
        raise TimeoutError(f"the stack was still busy after {timeout:.0f}s: {runs}")
