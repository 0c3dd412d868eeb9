"""Running a sandbox from its command line until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


def serve_until_stopped(sandbox: AbstractContextManager[Any], announce: Callable[[], None]) -> None:
    """Start `sandbox`, call `announce` (its addresses) and serve until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox:
        announce()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
