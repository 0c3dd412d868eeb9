"""How a user-properties run COPYs its changeable rows: straight into the table while nothing
conflicts, else through staging + ON CONFLICT DO NOTHING (ADR 0002, optimistic COPY).

The changeable rows of pending events are new: their keys are the events' uuids, which the
table does not hold until the event is migrated (and then it is no longer pending). So each
batch's rows are first COPY'd straight into the table in a savepoint — what raw COPY costs,
without the staging table and the conflict check — in COPY's binary format (the value layer
made every value its column's Python type: no text to build and parse). A unique conflict
(rows an earlier run over the same events left, say an S3 run over the archive the tmp table
was filled from) rolls the savepoint back, and that batch and the rest of the run go through
staging as before: the table ends up holding the same rows either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES

log = logging.getLogger(__name__)


class ChangeableCopy:
    """Inserts a run's changeable rows batch by batch, straight while `optimistic`."""

    def __init__(self, optimistic: bool = True) -> None:
        self.optimistic = optimistic
        """True until the run's first conflict (or when told not to try)."""
        self.direct_rows = 0
        """Rows COPY'd straight into the table (the rest went through staging)."""

    def insert(self, repo: Repository, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert `rows` (table column order) inside the caller's transaction; returns how
        many were inserted (rows already there are skipped)."""
        if not rows:
            return 0
        if self.optimistic:
            inserted = self._direct(repo, rows)
            if inserted is not None:
                return inserted
        return repo.copy_rows(CHANGEABLE_USER_PROPERTIES, rows)

    def _direct(self, repo: Repository, rows: Sequence[tuple[Any, ...]]) -> int | None:
        """COPY straight into the table in a savepoint; None: a key is there already."""
        try:
            inserted = repo.copy_rows(CHANGEABLE_USER_PROPERTIES, rows, direct=True, binary=True)
        except psycopg.errors.UniqueViolation:
            self.optimistic = False
            log.info(
                "changeable_user_properties already holds rows of this run's events: the "
                "rest of the run goes through staging + ON CONFLICT DO NOTHING"
            )
            return None
        self.direct_rows += inserted
        return inserted
