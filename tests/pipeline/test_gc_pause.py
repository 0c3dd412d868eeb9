"""gc_paused: automatic garbage collection off while a batch loop runs, back on after it."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from dwh_helper.pipeline.gc_pause import gc_paused

pytestmark = pytest.mark.unit


class _Node:
    """An object that can sit in a reference cycle."""

    other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """A cycle only the collector frees; a weak reference to watch it."""
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_collection_is_off_inside_and_back_on_after():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_in_the_block_still_turns_it_back_on():
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("batch failed")
    assert gc.isenabled()


def test_nested_and_concurrent_pauses_share_one_switch():
    inner_done = threading.Event()
    release = threading.Event()

    def other_run() -> None:
        with gc_paused():
            inner_done.set()
            release.wait(5)

    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
        thread = threading.Thread(target=other_run)
        thread.start()
        assert inner_done.wait(5)
    assert not gc.isenabled()  # the other thread's run still holds it
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_tick_frees_cycles_every_so_many_rows():
    with gc_paused(every_rows=100) as pause:
        watched = _cycle()
        pause.tick(60)
        assert watched() is not None  # not yet: 60 rows since the last collection
        pause.tick(60)
        assert watched() is None
        watched = _cycle()
        pause.tick(99)
        assert watched() is not None  # the count starts again after a collection
