"""A writer thread that ships batches to the database one batch behind the thread that fills them.

A loader hands `BatchWriter` a callable that writes one batch; the caller's thread reads and
converts batch N+1 while the writer thread writes batch N. At most one batch waits in the
queue, so memory stays flat whatever the input's size. The writer's first error is handed
back to the caller (at its next `submit`, or at `finish`); after an error no later batch is
written.

While a threaded writer runs, Python's GIL switch interval is lowered (`ETL_WRITER_SWITCH_INTERVAL`,
see `responsive_switch_interval`) so the writer gets the interpreter back quickly after each
network wait; the busy reader would otherwise keep it for Python's default 5 ms each time and
the database would idle (numbers in docs/benchmarks.md).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Generic, TypeVar

from dwh_helper.config import EtlSettings

Batch = TypeVar("Batch")

_DONE = object()


class BatchWriter(Generic[Batch]):
    """Writes batches with `write`, in order, on a thread of its own (or inline when not threaded).

    Use as a context manager: leaving normally waits for every batch (`finish`, which raises
    the writer's error), leaving by an exception stops after the batch in progress (`abort`).
    """

    def __init__(
        self,
        write: Callable[[Batch], None],
        *,
        name: str = "dwh-batch-writer",
        threaded: bool = True,
        switch_interval: float | None = None,
    ) -> None:
        self._write = write
        self._name = name
        self._threaded = threaded
        self._switch_interval = switch_interval
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._interval: AbstractContextManager[None] | None = None
        self.error: BaseException | None = None
        self.busy_seconds = 0.0
        """Seconds spent in `write` (the database's share of the work)."""
        self.wait_seconds = 0.0
        """Seconds the caller waited in `submit` for the writer to take a batch."""

    def __enter__(self) -> BatchWriter[Batch]:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.finish()
        else:
            self.abort()

    def start(self) -> None:
        """Start the writer thread (a no-op when not threaded)."""
        if not self._threaded or self._thread is not None:
            return
        self._interval = responsive_switch_interval(self._switch_interval)
        self._interval.__enter__()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        """Write `batch` (threaded: queue it; blocks while the previous one waits); raises the
        error of an earlier failed batch."""
        self._raise()
        if self._thread is None:
            self._timed_write(batch)
            return
        started = time.perf_counter()
        while True:
            try:
                self._queue.put(batch, timeout=0.1)
                break
            except queue.Full:
                self._raise()  # the writer failed and stopped taking batches
        self.wait_seconds += time.perf_counter() - started

    def finish(self) -> None:
        """Wait until every queued batch is written; re-raise the writer's error."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._stop()
        self._raise()

    def abort(self) -> None:
        """Stop after the batch in progress (the caller failed); nothing queued is written."""
        if self._thread is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            if self.error is None:
                self.error = RuntimeError("batch writer aborted")
            self._queue.put(_DONE)
            self._stop()

    def _stop(self) -> None:
        assert self._thread is not None
        self._thread.join()
        self._thread = None
        if self._interval is not None:
            self._interval.__exit__(None, None, None)
            self._interval = None

    def _run(self) -> None:
        while (batch := self._queue.get()) is not _DONE:
            if self.error is not None:
                continue  # drain: the caller stops at its next submit
            try:
                self._timed_write(batch)  # type: ignore[arg-type]
            except BaseException as exc:  # re-raised in the caller's thread
                self.error = exc

    def _timed_write(self, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            self._write(batch)
        finally:
            self.busy_seconds += time.perf_counter() - started

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def hand_over() -> None:
    """Let the writer thread take the GIL if it waits for it (the reader calls this every
    hundred records or so): a zero sleep lasts long enough for a waiting thread to take it."""
    time.sleep(0)


_interval_lock = threading.Lock()
_interval_users = 0
_interval_saved: float | None = None


@contextmanager
def responsive_switch_interval(interval: float | None = None) -> Iterator[None]:
    """Lower Python's GIL switch interval while the block runs (reentrant, thread-safe).

    `interval` defaults to `ETL_WRITER_SWITCH_INTERVAL`; 0 leaves the interpreter's interval
    alone. Nested or concurrent users share one lowering: the first saves the interval in
    force, the last one out restores exactly that value, once.
    """
    global _interval_users, _interval_saved
    if interval is None:
        interval = EtlSettings().writer_switch_interval
    if interval <= 0:
        yield
        return
    with _interval_lock:
        if _interval_users == 0:
            _interval_saved = sys.getswitchinterval()
        _interval_users += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), interval))
    try:
        yield
    finally:
        with _interval_lock:
            _interval_users -= 1
            if _interval_users == 0 and _interval_saved is not None:
                sys.setswitchinterval(_interval_saved)
                _interval_saved = None
