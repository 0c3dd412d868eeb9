"""Temporary files of loads: one directory per load under one configurable root, removed when
the load ends; directories left by loads that died are removed by the next load."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dwh_helper.config import EtlSettings

log = logging.getLogger(__name__)

PREFIX = "load-"


def temp_root(settings: EtlSettings | None = None) -> Path:
    """The root of the loads' temporary directories (`ETL_TEMP_DIR`, else the system's)."""
    settings = settings or EtlSettings()
    if settings.temp_dir is not None:
        return Path(settings.temp_dir)
    return Path(tempfile.gettempdir()) / "dwh-helper-loads"


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(root: Path, max_age: float) -> list[Path]:
    """Remove load directories of dead processes on this host, and any older than `max_age`
    seconds (whoever left them); returns those removed."""
    removed = []
    now = time.time()
    host = _host()
    for child in root.glob(f"{PREFIX}*"):
        parts = child.name.split("-")  # load-<host>-<pid>-<random>
        try:
            age = now - child.stat().st_mtime
        except FileNotFoundError:
            continue
        mine = len(parts) >= 4 and parts[1] == host and parts[2].isdigit()
        dead = mine and int(parts[2]) != os.getpid() and not _alive(int(parts[2]))
        if dead or age > max_age:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
            log.warning(
                "removed %s, left by a load that did not finish (%s, %.0fs old)",
                child,
                "its process is gone" if dead else "too old",
                age,
            )
    return removed


@contextmanager
def load_temp_dir(root: Path | None = None, max_age: float | None = None) -> Iterator[Path]:
    """A fresh directory for one load's temporary files under `root`, removed on exit; first
    removes what dead loads left behind."""
    settings = EtlSettings() if root is None or max_age is None else None
    root = root or temp_root(settings)
    max_age = settings.temp_max_age if max_age is None and settings else max_age
    root.mkdir(parents=True, exist_ok=True)
    remove_leftovers(root, float(max_age or 3600))
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_host()}-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
