"""The Amplitude source's errors, with `status`, `retry_after`, `retryable` to act on."""

from __future__ import annotations

from dwh_helper.sources.http_retry import UpstreamError


class AmplitudeError(UpstreamError):
    """Base of the Amplitude source's errors; `retryable` says whether trying later may help."""


class AmplitudeAuthError(AmplitudeError):
    """401/403: the project's keys or its region are wrong (fatal)."""


class AmplitudeWindowTooLarge(AmplitudeError):
    """400/504 for a single hour: that hour is over Amplitude's 4 GB export limit (fatal)."""


class AmplitudeDataNotReady(AmplitudeError):
    """The window ends less than 2 hours ago; Amplitude's data may be incomplete (fatal)."""


class AmplitudeUnavailable(AmplitudeError):
    """A transient fault (429, 5xx, network, a broken archive); raised when every attempt failed."""

    retryable = True


class ArchiveError(AmplitudeError):
    """A downloaded archive is corrupt: bad ZIP, bad gzip entry or a line that is not JSON."""

    def __init__(self, message: str, *, entry: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry
        self.line = line
