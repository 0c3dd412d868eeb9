"""Assets the DAGs produce and consume (data-aware scheduling)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, task

from dwh_helper.operators.load import S3ToDwhOperator

AMPLITUDE_EVENTS = Asset("dwh://public/amplitude_events")
"""Updated by `amplitude_events` when Amplitude events land in the DWH; feeds `user_properties`."""

APPMETRICA_EVENTS = Asset("dwh://appmetrica/events")
"""Updated by `appmetrica_events` whenever AppMetrica rows land in the DWH."""


def publish_loaded(asset: Asset, task_id: str = "publish"):  # noqa: ANN201 - the task's XComArg
    """A task that updates `asset` once, after every mapped `load` of the run succeeded.

    Consumers (e.g. `user_properties`) then start after the whole run's data landed,
    not after the first file of it.
    """

    @task(task_id=task_id, outlets=[asset])
    def publish(summaries: list[dict] | None = None) -> dict[str, int]:
        files = sum(int(summary.get("files", 0)) for summary in summaries or [])
        rows = sum(int(summary.get("rows_read", 0)) for summary in summaries or [])
        return {"files": files, "rows_read": rows}

    return publish


def load_then_publish(source: str, keys: Any, asset: Asset, nothing: str) -> Any:
    """The `load` tasks of a loading DAG (one per extracted key list of `keys`, an XComArg)
    and the `publish` of `asset` after all of them; `nothing` labels a map index with no key.
    Returns the `publish` task's XComArg."""
    load = S3ToDwhOperator.partial(
        task_id="load",
        source=source,
        map_index_template="{{ task.keys | join(', ') or '" + nothing + "' }}",
        execution_timeout=timedelta(hours=3),
    ).expand(keys=keys)
    return publish_loaded(asset)(load.output)
