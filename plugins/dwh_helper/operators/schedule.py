"""Tasks every loading DAG starts with: apply the DWH migrations, plan the (…, day) work items."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

MAX_DAYS_PER_RUN = 366

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}
"""Task defaults of every DAG: 3 retries, exponential backoff from 2 to 30 minutes."""

log = logging.getLogger(__name__)


def day_range_params(unit: str = "UTC day") -> dict[str, Param]:
    """The `start` / `end` Params of a manual run (date pickers; empty = the data interval)."""
    return {
        "start": Param(
            None,
            type=["null", "string"],
            format="date",
            description=f"First {unit} to load (manual runs; default: the data interval's day)",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            description=f"Last {unit}, inclusive (default: `start`)",
        ),
    }


def days_to_run(params: dict[str, Any], interval_start: datetime | None) -> list[date]:
    """The UTC days of a run: `start`..`end` from the params, else the data interval's day."""
    start, end = params.get("start"), params.get("end")
    if start:
        first = date.fromisoformat(str(start))
        last = date.fromisoformat(str(end)) if end else first
    elif interval_start is not None:
        first = last = interval_start.date()
    else:  # a manual run without an interval: yesterday, UTC
        first = last = datetime.now(UTC).date() - timedelta(days=1)
    if last < first:
        raise AirflowFailException(f"params: end ({last}) is before start ({first})")
    days = (last - first).days + 1
    if days > MAX_DAYS_PER_RUN:
        raise AirflowFailException(
            f"params: {days} days requested; at most {MAX_DAYS_PER_RUN} per run — split the range"
        )
    return [first + timedelta(days=offset) for offset in range(days)]


def plan_days(**dimensions: str):  # noqa: ANN201 - returns the task's XComArg
    """A `plan` task: every combination of the listed params' values with every day of the run.

    `plan_days(source="sources")` gives `[{"source": "web", "day": "2024-03-02"}, ...]`.
    """

    @task(task_id="plan")
    def plan() -> list[dict[str, str]]:
        context = get_current_context()
        params = context["params"]
        days = days_to_run(params, context.get("data_interval_start"))
        names = list(dimensions)
        values = []
        for name, param in dimensions.items():
            chosen = params.get(param) or []
            if isinstance(chosen, str):
                chosen = [item.strip() for item in chosen.split(",") if item.strip()]
            if not chosen:
                raise AirflowFailException(f"params: {param} is empty; name at least one {name}")
            values.append([str(item) for item in chosen])
        items = [
            {**dict(zip(names, combination, strict=True)), "day": day.isoformat()}
            for day in days
            for combination in itertools.product(*values)
        ]
        log.info(
            "planned %d item(s): %s%s", len(items), items[:10], " ..." if len(items) > 10 else ""
        )
        return items

    return plan()


@task(task_id="migrate_schema")
def run_migrations(dwh_conn_id: str = "dwh_postgres") -> list[int]:
    """Apply the pending DWH migrations (idempotent); returns the versions applied."""
    from dwh_helper.dwh.schema import migrate
    from dwh_helper.hooks.dwh import dwh_connection

    with dwh_connection(dwh_conn_id) as conn:
        return migrate(conn)
