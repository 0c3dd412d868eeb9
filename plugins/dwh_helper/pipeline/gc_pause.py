"""Python's cyclic garbage collector paused while a batch loop runs, and run between batches.

A batch loop keeps tens of thousands of objects alive at a time (the rows read, the records
converted, the people's latest states). The collector's automatic passes walk them again and
again although they hold no reference cycles: about a third of the user-properties ETL's CPU
time (docs/benchmarks.md, issue 15). While paused, the loop reports its progress with
`CollectionPause.tick`, and every `every_rows` rows the objects made since the previous
collection are collected (generations 0 and 1: not the process's older objects, which in an
Airflow worker are many), so what little cyclic garbage a run makes is still freed and memory
stays flat.

The pause is process-wide (the collector has one switch): nested or concurrent pauses share
it, and the last one out turns automatic collection back on — only if it was on before the
first one began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

COLLECT_EVERY_ROWS = 100_000
"""Rows between two collections while paused."""

_lock = threading.Lock()
_users = 0
_was_enabled = False


class CollectionPause:
    """Counts the rows a paused loop has handled and collects the young generations every
    `every_rows` of them."""

    def __init__(self, every_rows: int = COLLECT_EVERY_ROWS) -> None:
        self.every_rows = every_rows
        self._since = 0

    def tick(self, rows: int) -> None:
        """Note `rows` more rows handled; collect what the run made since the previous
        collection once enough rows have passed."""
        self._since += rows
        if self._since >= self.every_rows:
            self._since = 0
            gc.collect(1)


@contextmanager
def gc_paused(every_rows: int = COLLECT_EVERY_ROWS) -> Iterator[CollectionPause]:
    """Turn automatic garbage collection off while the block runs (see the module docstring);
    the block calls `tick(rows)` after each batch."""
    global _users, _was_enabled
    with _lock:
        if _users == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _users += 1
    try:
        yield CollectionPause(every_rows)
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _was_enabled:
                gc.enable()
