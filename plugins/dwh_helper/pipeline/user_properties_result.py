"""What a user-properties run did (`MigrationResult`) and how it stops part way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dwh_helper.pipeline.load_errors import describe_error


class MigrationInterrupted(RuntimeError):
    """A run stopped part way; `result` says what was committed and where to resume."""

    def __init__(self, message: str, result: MigrationResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class MigrationResult:
    """What a run did: counts, unknown keys, and (for `s3`) the lines done and the failing one.

    `values_nulled`: values stored NULL and reported (the record loaded); `values_repaired`:
    values that had a NUL removed."""

    source: str
    status: Literal["completed", "interrupted"] = "completed"
    processed: int = 0
    rejected: int = 0
    rejected_before: int = 0
    values_nulled: int = 0
    values_repaired: int = 0
    permanent_inserted: int = 0
    changeable_inserted: int = 0
    batches: int = 0
    rederived_people: int = 0
    unknown_keys: dict[str, int] = field(default_factory=dict)
    error_keys: dict[str, int] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None
    key: str | None = None
    start_after: int | None = None
    last_line: int | None = None
    failed_line: int | None = None
    error: str | None = None
    seconds: float = 0.0

    def interrupted(
        self, error: BaseException, unknown: Mapping[str, int], what: str, advice: str
    ) -> MigrationInterrupted:
        """Mark the run interrupted by `error`; the exception that says `what` and `advice`."""
        self.status = "interrupted"
        self.error = describe_error(error)
        self.unknown_keys = dict(unknown)
        return MigrationInterrupted(f"{what}: {self.error}; {advice}", self)

    @property
    def new_reject_ratio(self) -> float:
        """Share of this run's records rejected for the first time (repeat rejects left out)."""
        new = self.rejected - self.rejected_before
        total = self.processed + new
        return new / total if total else 0.0

    @property
    def rows_per_second(self) -> float:
        """Records (processed + rejected) per second of the run."""
        total = self.processed + self.rejected
        return total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XCom, API responses)."""
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        data["new_reject_ratio"] = round(self.new_reject_ratio, 6)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        """One log line: counts, rate, unknown keys, and where to resume."""
        text = (
            f"user properties ({self.source}) {self.status}: {self.processed} processed, "
            f"{self.rejected} rejected ({self.rejected_before} of them already before), "
            f"{self.values_nulled} values stored NULL and reported, "
            f"{self.values_repaired} values repaired (NUL removed), "
            f"{self.permanent_inserted} permanent and "
            f"{self.changeable_inserted} changeable rows inserted in {self.batches} batches, "
            f"{self.rederived_people} people re-derived for late rows, "
            f"{self.seconds:.1f}s ({self.rows_per_second:.0f} rows/s)"
        )
        if self.unknown_keys:
            top = sorted(self.unknown_keys.items(), key=lambda item: (-item[1], item[0]))[:10]
            text += "; unknown keys: " + ", ".join(f"{key}={count}" for key, count in top)
        if self.key is not None:
            text += f"; s3 key {self.key}, last line {self.last_line}"
        if self.status != "completed":
            text += f"; failed at line {self.failed_line}" if self.failed_line else ""
            text += f"; error: {self.error}"
        return text
