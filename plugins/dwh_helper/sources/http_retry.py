"""The one retry policy of the HTTP sources: exponential backoff with jitter, run by tenacity.

Each client keeps one predicate saying which faults are worth another try (as
Airflow's dbt Cloud hook does with `_retryable_error`); this module owns the
rest: how long to wait (a server's `Retry-After`, in seconds or as an
HTTP-date, wins over the backoff), how many attempts, and the structured
error every source raises so callers act on fields, never on message text.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
import tenacity

__all__ = [
    "RetryPolicy",
    "UpstreamError",
    "fault_fields",
    "fault_reason",
    "retry_after_seconds",
    "transport_fault",
]


class UpstreamError(Exception):
    """A failure of an upstream API, with the fields a caller decides on.

    `status` is the HTTP status behind it (None for network faults and local
    checks), `retry_after` the seconds the server asked to wait (None when it
    did not say), `retryable` whether trying again later may succeed, and
    `timed_out` whether the last fault was a timeout (no answer in time).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.timed_out = timed_out


def fault_reason(fault: BaseException) -> str:
    """A fault in a few words: the answer for HTTP faults, the exception's type for network ones."""
    if isinstance(fault, UpstreamError):
        return str(fault)
    return f"{type(fault).__name__}: {fault}"


def fault_fields(fault: BaseException) -> dict[str, Any]:
    """The last fault's `status`, `retry_after` and `timed_out`, for the error a client gives
    up with."""
    return {
        "status": getattr(fault, "status", None),
        "retry_after": getattr(fault, "retry_after", None),
        "timed_out": isinstance(fault, httpx.TimeoutException),
    }


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header as seconds from `now`: delay-seconds or an HTTP-date; else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def transport_fault(exc: BaseException) -> bool:
    """Whether `exc` is a network fault of httpx (connection, timeout, broken or bad body)."""
    return isinstance(exc, (httpx.TransportError, httpx.DecodingError))


@dataclass
class RetryPolicy:
    """How often and how long to retry: `max_attempts` tries, backoff doubling up to a cap.

    The n-th wait is between half and all of `min(backoff_max, backoff_base * 2**(n-1))`
    (never near zero, never all clients at once), unless the fault carries a
    `retry_after`, which is waited exactly.
    """

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def backoff(self, attempt: int) -> float:
        """The jittered exponential wait after failed attempt number `attempt` (from 1)."""
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return cap * (0.5 + self.rng.random() / 2)

    def wait_after(self, attempt: int, fault: BaseException | None) -> float:
        """Seconds to wait after `fault`: its `retry_after` when the server said, else backoff."""
        retry_after = getattr(fault, "retry_after", None)
        if retry_after is not None:
            return max(0.0, float(retry_after))
        return self.backoff(attempt)

    def retrying(
        self,
        retryable: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None],
        on_retry: Callable[[int, float, BaseException], None],
        give_up: Callable[[int, BaseException], NoReturn],
        on_fault: Callable[[int, BaseException], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity controller: retry what `retryable` accepts, `give_up` raises at the end.

        `on_fault(attempt, fault)` sees every retryable fault, `on_retry(attempt,
        wait, fault)` runs before each wait, `give_up(attempts, last fault)`
        raises the caller's error when attempts ran out.
        """

        def fault_of(state: tenacity.RetryCallState) -> BaseException:
            assert state.outcome is not None
            exc = state.outcome.exception()
            assert exc is not None
            return exc

        def after(state: tenacity.RetryCallState) -> None:
            if on_fault is not None:
                on_fault(state.attempt_number, fault_of(state))

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=lambda state: self.wait_after(state.attempt_number, fault_of(state)),
            sleep=sleep,
            after=after,
            before_sleep=lambda state: on_retry(
                state.attempt_number, state.upcoming_sleep, fault_of(state)
            ),
            retry_error_callback=lambda state: give_up(state.attempt_number, fault_of(state)),
        )
