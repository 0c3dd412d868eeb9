"""A throwaway PostgreSQL cluster (initdb + pg_ctl) for tests, the demo and benchmarks."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SEARCH_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/pgsql/bin",
)


class PostgresNotFound(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def find_pg_bin() -> Path:
    """The directory holding `initdb` and `pg_ctl` (PG_BIN, PATH, or the usual places)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(
        (path for pattern in _SEARCH_DIRS for path in glob.glob(pattern)),
        key=lambda path: [int(part) for part in path.split("/") if part.isdigit()] or [0],
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise PostgresNotFound(
        "PostgreSQL server binaries not found (initdb, pg_ctl). Install them "
        "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) "
        "or set PG_BIN to their directory, or point DWH_TEST_DSN at an existing server."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryPostgres:
    """Start a private cluster in a temp dir on a free port; stop and delete it on exit.

    PostgreSQL refuses to run as root: when this process is root, the server
    commands run as the `postgres` user through `runuser`.
    """

    def __init__(
        self, port: int | None = None, user: str = "postgres", *, durable: bool = False
    ) -> None:
        self.port = port or free_port()
        self.durable = durable
        """True: PostgreSQL's default durability (fsync, synchronous_commit, full_page_writes
        on), what a DWH runs; False (tests): all three off, faster and crash-unsafe."""
        self.user = user
        self.bin = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="dwh-pg-"))
        self.datadir = self.root / "data"
        self._as_other_user = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        """Connection string of the cluster's `postgres` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """Connection string of one database of the cluster."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_other_user:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}")

    def start(self) -> TemporaryPostgres:
        """initdb and start the server; returns self once it accepts connections."""
        if self._as_other_user:
            shutil.chown(self.root, user="postgres")
        started = time.monotonic()
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=100 -c shared_buffers=128MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        log.info(
            "throwaway PostgreSQL on port %s ready in %.1fs", self.port, time.monotonic() - started
        )
        return self

    def stop(self) -> None:
        """Stop the server and remove its files."""
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
