"""`python -m dwh_helper.dwh migrate [--dsn DSN]`: apply the DWH schema migrations."""

from __future__ import annotations

import argparse
import logging
import sys

from dwh_helper.config import SettingsError, configure_logging, get_settings
from dwh_helper.dwh.repository import open_connection
from dwh_helper.dwh.schema import MIGRATIONS, MigrationError, migrate

log = logging.getLogger("dwh_helper.dwh")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m dwh_helper.dwh", description=__doc__)
    parser.add_argument("command", choices=["migrate"], help="apply pending migrations")
    parser.add_argument("--dsn", help="libpq connection string (default: the DB_* settings)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        dsn = args.dsn or get_settings().db.conninfo()
        with open_connection(dsn) as conn:
            applied = migrate(conn)
    except (SettingsError, MigrationError) as exc:
        log.error("%s", exc)
        return 2
    latest = max(migration.version for migration in MIGRATIONS)
    if applied:
        print(f"applied migrations {applied}; schema is at version {latest}")
    else:
        print(f"nothing to do; schema is at version {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
