"""The batch writer thread: order, error hand-back, abort, and the reentrant switch interval."""

from __future__ import annotations

import sys
import threading

import pytest

from dwh_helper.pipeline import batch_writer
from dwh_helper.pipeline.batch_writer import BatchWriter, responsive_switch_interval


@pytest.fixture
def original_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    yield 0.004
    sys.setswitchinterval(before)


def test_batches_are_written_in_order_on_another_thread() -> None:
    written: list[tuple[int, str]] = []
    with BatchWriter(lambda batch: written.append((batch, threading.current_thread().name))) as w:
        for number in range(20):
            w.submit(number)
    assert [number for number, _ in written] == list(range(20))
    assert {name for _, name in written} == {"dwh-batch-writer"}


def test_unthreaded_writer_writes_inline() -> None:
    written: list[int] = []
    writer = BatchWriter(written.append, threaded=False)
    with writer:
        writer.submit(1)
        assert written == [1]


def test_the_writers_error_reaches_the_caller_and_stops_later_batches() -> None:
    written: list[int] = []

    def write(batch: int) -> None:
        if batch == 3:
            raise ValueError("batch 3 refused")
        written.append(batch)

    with pytest.raises(ValueError, match="batch 3 refused"):
        with BatchWriter(write) as writer:
            for number in range(50):
                writer.submit(number)
    assert written == [0, 1, 2]


def test_abort_stops_after_the_batch_in_progress(original_interval: float) -> None:
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def write(batch: int) -> None:
        started.set()
        release.wait(5)
        written.append(batch)

    with pytest.raises(KeyError):
        with BatchWriter(write) as writer:
            writer.submit(1)
            started.wait(5)
            writer.submit(2)  # queued, never written
            release.set()
            raise KeyError("the reader failed")
    assert written == [1]
    assert sys.getswitchinterval() == original_interval


def test_nested_lowering_restores_the_original_interval_once(original_interval: float) -> None:
    with responsive_switch_interval(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
        with responsive_switch_interval(0.0005):
            assert sys.getswitchinterval() == pytest.approx(0.0005)
        # the inner block must not restore while the outer one still runs
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == original_interval
    assert batch_writer._interval_users == 0


def test_overlapping_writers_on_threads_restore_the_original_interval(
    original_interval: float,
) -> None:
    """Two loads on two threads whose writers start and stop interleaved (A in, B in, A out,
    B out): B must not 'restore' the lowered value A saw, and A must not restore under B."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def first() -> None:
        with BatchWriter(lambda batch: None, switch_interval=0.001) as writer:
            writer.submit(1)
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def second() -> None:
        a_in.wait(5)
        with BatchWriter(lambda batch: None, switch_interval=0.001) as writer:
            writer.submit(1)
            b_in.set()
            a_out.wait(5)
            seen["while B runs alone"] = sys.getswitchinterval()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen["while B runs alone"] == pytest.approx(0.001)
    assert sys.getswitchinterval() == original_interval


def test_zero_leaves_the_interval_alone(original_interval: float) -> None:
    with responsive_switch_interval(0):
        assert sys.getswitchinterval() == original_interval


def test_the_setting_chooses_the_interval(
    original_interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_WRITER_SWITCH_INTERVAL", "0.002")
    with responsive_switch_interval():
        assert sys.getswitchinterval() == pytest.approx(0.002)
    assert sys.getswitchinterval() == original_interval
