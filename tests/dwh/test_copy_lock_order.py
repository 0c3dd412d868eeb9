"""The copy path inserts in key order: two loads with the same keys in opposite orders wait for
each other instead of deadlocking (issue 16: mobile_devices of two files sharing devices)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.dwh.tables import MOBILE_DEVICES

pytestmark = pytest.mark.db

DEVICES = [f"dev-{i:03d}" for i in range(60)]


def _waiting(conn: psycopg.Connection, count: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
    ).fetchone()
    return row[0] >= count


def test_overlapping_keys_in_opposite_orders_do_not_deadlock(dwh_dsn, dwh_conn):
    """A third session holds the middle device; both loads (one in ascending, one in
    descending order) reach it and wait. Without ORDER BY each would hold the half the other
    needs next when it is released: a deadlock. In key order, one simply waits for the other."""
    errors: list[BaseException] = []
    inserted: list[int] = []

    def load(devices: list[str]) -> None:
        try:
            with open_connection(dwh_dsn) as conn:
                repo = Repository(conn)
                with repo.transaction():
                    inserted.append(
                        repo.copy_rows(MOBILE_DEVICES, [(d,) + (None,) * 6 for d in devices])
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with psycopg.connect(dwh_dsn) as holder:
        holder.execute("INSERT INTO mobile_devices (device_id) VALUES (%s)", (DEVICES[30],))
        threads = [
            threading.Thread(target=load, args=(DEVICES,)),
            threading.Thread(target=load, args=(DEVICES[::-1],)),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while not _waiting(dwh_conn, 2):
            assert time.monotonic() < deadline, "the loads never met the held device"
            time.sleep(0.01)
        holder.rollback()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(inserted) == [0, len(DEVICES)]
    assert dwh_conn.execute("SELECT count(*) FROM mobile_devices").fetchone()[0] == len(DEVICES)
    dwh_conn.execute("SELECT pg_stat_clear_snapshot()")
    deadlocks = dwh_conn.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()[0]
    assert deadlocks == 0
