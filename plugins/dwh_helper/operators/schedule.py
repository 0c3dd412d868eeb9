"""Tasks every loading DAG starts with: apply the DWH migrations, plan the (…, day) work items."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dwh_helper.config import etl_settings
from dwh_helper.operators.params import as_bool, as_list, bad_param, day_range

AMPLITUDE_PARALLEL_EXPORTS = 2
"""Amplitude exports running at once (all runs of the DAG): a cap that needs no pool to exist."""
APPMETRICA_PARALLEL_EXPORTS = 3
"""AppMetrica Logs API requests at once: AppMetrica queues at most 3 per application."""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=etl_settings().retry_delay),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}
"""Task defaults of every DAG: 3 retries, exponential backoff from ETL_RETRY_DELAY (default
2 minutes) to 30 minutes."""

DAG_DEFAULTS: dict[str, Any] = {
    "catchup": False,
    "max_active_runs": 1,
    "render_template_as_native_obj": True,
    "default_args": DEFAULT_ARGS,
}
"""`@dag` arguments of every DAG: no catch-up, one run at a time, templated params rendered as
native Python values (a `false` param stays False), DEFAULT_ARGS for the tasks."""

log = logging.getLogger(__name__)


DEFAULT_DAY = (
    "empty = a manual run (UI, CLI or REST API alike) loads the UTC day before it was "
    "triggered (calendar yesterday); a scheduled or backfill run loads its data interval's day"
)
"""How a run without `start` picks its day (shown in the Params' descriptions)."""


def date_param(description: str, title: str | None = None) -> Param:
    """An optional date Param of a manual run (a date picker; empty = None)."""
    labels = {"title": title} if title else {}
    return Param(None, type=["null", "string"], format="date", description=description, **labels)


def reload_param(files: str, upstream: str) -> Param:
    """The `reload_from_s3` Param of a loading DAG: re-load S3's files, no `upstream` call."""
    description = f"Re-load the {files} already in S3; no {upstream} call"
    return Param(False, type="boolean", description=description)


def day_range_params(unit: str = "UTC day") -> dict[str, Param]:
    """The `start` / `end` Params of a manual run (date pickers; empty = see DEFAULT_DAY)."""
    return {
        "start": date_param(f"First {unit} to load; {DEFAULT_DAY}"),
        "end": date_param(f"Last {unit}, inclusive (default: `start`)"),
    }


def default_day(
    run_type: str | None, interval_start: datetime | None, run_after: datetime | None
) -> date:
    """The day a run without `start` loads (DEFAULT_DAY).

    Manual runs ignore the data interval: the UI gives them the last complete interval
    (two days back before 03:00 UTC) while the CLI and REST API give none, so the same
    click would load different days. They load the UTC day before the trigger time.
    """
    if str(run_type or "").lower() != "manual" and interval_start is not None:
        return interval_start.astimezone(UTC).date()
    triggered = run_after if run_after is not None else datetime.now(UTC)
    if triggered.tzinfo is None:
        triggered = triggered.replace(tzinfo=UTC)
    return triggered.astimezone(UTC).date() - timedelta(days=1)


def run_days(context: Any) -> list[date]:
    """The days of the running DAG run, from its params, type, data interval and trigger time."""
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    run_after = getattr(dag_run, "run_after", None)
    return days_to_run(
        context["params"],
        context.get("data_interval_start"),
        run_type=getattr(run_type, "value", run_type),
        run_after=run_after,
    )


def days_to_run(
    params: dict[str, Any],
    interval_start: datetime | None,
    *,
    run_type: str | None = None,
    run_after: datetime | None = None,
) -> list[date]:
    """The UTC days of a run: `start`..`end` from the params, else `default_day`."""
    default = default_day(run_type, interval_start, run_after)
    return day_range(params.get("start"), params.get("end"), default=default)


@dataclass(frozen=True)
class Dimension:
    """One axis of a run's plan: the operator argument it fills and the Param that lists it.

    `choices` limits the values (`numeric`: digits only); `default` gives them when the Param
    is empty (called in the task, so it may read a connection); `help` says what to set when
    there is none at all.
    """

    argument: str
    param: str
    choices: tuple[str, ...] | None = None
    numeric: bool = False
    default: Callable[[], list[str]] | None = None
    help: str = ""

    def values(self, params: dict[str, Any]) -> list[str]:
        """The chosen values of this axis (the Param, else the default); fails when none."""
        chosen = as_list(params.get(self.param), f"params: {self.param}", choices=self.choices)
        if not chosen and self.default is not None:
            chosen = as_list(self.default(), f"default {self.param}", choices=self.choices)
        if not chosen:
            raise AirflowFailException(
                self.help or f"params: {self.param} is empty; name at least one {self.argument}"
            )
        bad = [value for value in chosen if self.numeric and not value.isdigit()]
        if bad:
            raise bad_param(f"params: {self.param}", bad, f"numeric {self.argument}s")
        return chosen


def plan_days(*dimensions: Dimension):  # noqa: ANN201 - returns the task's XComArg
    """The `plan` task of every loading DAG: each combination of the dimensions' values, each day.

    `plan_days(Dimension("source", "sources"))` gives
    `[{"source": "web", "day": "2024-03-02"}, ...]`, one item per mapped `extract`.
    """

    @task(task_id="plan")
    def plan() -> list[dict[str, str]]:
        context = get_current_context()
        params = context["params"]
        days = run_days(context)
        names = [dimension.argument for dimension in dimensions]
        values = [dimension.values(params) for dimension in dimensions]
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


def run_migrations(dwh_conn_id: str = "dwh_postgres", **needs: str):  # noqa: ANN201
    """The `migrate_schema` task: check the run's connections, then apply the DWH migrations.

    `needs` names the connections the run uses besides `dwh_conn_id` and `aws_default`:
    `amplitude="sources"` checks `amplitude_<source>` for each source in that param,
    `appmetrica="appmetrica_default"` checks that connection. Skipped with `reload_from_s3`.
    A missing connection fails the run at once (no retries), saying how to create it.
    """

    @task(task_id="migrate_schema")
    def migrate_schema() -> list[int]:
        from dwh_helper.dwh.schema import migrate
        from dwh_helper.hooks.connection_fields import ConnectionMissing, require_connections
        from dwh_helper.hooks.dwh import dwh_connection

        params = get_current_context()["params"]
        required = [dwh_conn_id, "aws_default"] if needs else [dwh_conn_id]
        if not as_bool(params.get("reload_from_s3"), "params: reload_from_s3"):
            if "amplitude" in needs:
                sources = as_list(params.get(needs["amplitude"]), f"params: {needs['amplitude']}")
                required += [f"amplitude_{source}" for source in sources]
            if "appmetrica" in needs:
                required.append(needs["appmetrica"])
        try:
            require_connections(required)
        except ConnectionMissing as exc:
            raise AirflowFailException(str(exc)) from exc
        with dwh_connection(dwh_conn_id) as conn:
            return migrate(conn)

    return migrate_schema()
