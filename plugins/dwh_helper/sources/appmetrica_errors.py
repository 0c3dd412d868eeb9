"""The AppMetrica source's errors, with `status`, `retry_after`, `retryable` to act on."""

from __future__ import annotations

from dwh_helper.sources.http_retry import UpstreamError


class AppMetricaError(UpstreamError):
    """Any failure talking to the Logs API; `retryable` says whether trying later may succeed."""


class AppMetricaAuthError(AppMetricaError):
    """401/403: the token is missing, wrong, or has no access to the application (fatal)."""


class AppMetricaBadRequest(AppMetricaError):
    """Any other 4xx: AppMetrica rejected the parameters; the message quotes its answer (fatal)."""


class AppMetricaTooLarge(AppMetricaBadRequest):
    """400 "Try to use more parts": this part is too large; ask again with more parts."""


class AppMetricaNotReady(AppMetricaError):
    """The file was still being prepared (202) when the polling deadline passed."""

    retryable = True


class AppMetricaUnavailable(AppMetricaError):
    """5xx answers, network errors or 429s (`status` 429: AppMetrica's queue is full)."""

    retryable = True


class AppMetricaQueueFull(AppMetricaUnavailable):
    """429: AppMetrica already prepares 3 files for the application; ask again later.

    Not retried by the retry policy: the polling protocol waits `rate_limit_wait`
    (or the server's `retry_after`) between rounds instead.
    """

    def __init__(
        self, message: str, *, label: str, answer: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=429, retry_after=retry_after)
        self.label = label
        self.answer = answer
