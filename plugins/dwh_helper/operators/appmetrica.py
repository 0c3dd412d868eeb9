"""AppMetricaToS3Operator (one day of one resource of one application → S3) and the DAG's plan."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

from airflow.sdk import BaseOperator, Context, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dwh_helper.catalogue.appmetrica import RESOURCE_NAMES

log = logging.getLogger(__name__)

RESOURCES = RESOURCE_NAMES  # the field catalogue's resources


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item).strip() for item in value if str(item).strip()]


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


class AppMetricaToS3Operator(BaseOperator):
    """Export `day` (YYYY-MM-DD) of `resource` of AppMetrica application `application_id` to S3.

    The Logs API file(s) land unchanged at
    `raw/appmetrica/<application_id>/<resource>/<YYYY>/<MM>/<DD>/...`; returns their keys.
    `fields` (a list or comma-separated; default: every documented field) narrows the
    export (identity fields are always added); `date_dimension` is `default` (device time)
    or `receive`. With `reload_from_s3` nothing is asked of AppMetrica: the keys already
    in S3 are returned. Bad credentials or parameters fail the task without retries;
    a file still being prepared at the deadline, 429s and 5xx are retried (client, then Airflow).
    """

    template_fields: Sequence[str] = (
        "application_id",
        "resource",
        "day",
        "fields",
        "date_dimension",
        "reload_from_s3",
    )
    ui_color = "#fcf3cf"

    def __init__(
        self,
        *,
        application_id: str | int,
        resource: str = "events",
        day: str | date,
        fields: Sequence[str] | str | None = None,
        date_dimension: str = "default",
        reload_from_s3: bool | str = False,
        fmt: str = "csv",
        appmetrica_conn_id: str = "appmetrica_default",
        aws_conn_id: str = "aws_default",
        bucket: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.application_id = application_id
        self.resource = resource
        self.day = day
        self.fields = fields
        self.date_dimension = date_dimension
        self.reload_from_s3 = reload_from_s3
        self.fmt = fmt
        self.appmetrica_conn_id = appmetrica_conn_id
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    def execute(self, context: Context) -> list[str]:
        """Export (or list, when re-loading) the day's files; returns their S3 keys."""
        from dwh_helper.hooks.appmetrica import AppMetricaHook
        from dwh_helper.hooks.connection_fields import ConnectionMissing
        from dwh_helper.hooks.s3 import object_store
        from dwh_helper.pipeline.appmetrica import day_keys, extract_appmetrica
        from dwh_helper.sources.appmetrica import AppMetricaError

        application_id = str(self.application_id).strip()
        try:
            day = self.day if isinstance(self.day, date) else date.fromisoformat(str(self.day))
        except ValueError:
            raise AirflowFailException(f"day {self.day!r} is not a YYYY-MM-DD date") from None
        if not application_id.isdigit():
            raise AirflowFailException(f"application_id {application_id!r} must be numeric")
        if self.resource not in RESOURCES:
            raise AirflowFailException(
                f"resource {self.resource!r} is not supported; use one of {', '.join(RESOURCES)}"
            )
        store = object_store(self.aws_conn_id, self.bucket)
        if _is_true(self.reload_from_s3):
            keys = day_keys(store, application_id, self.resource, day)
            self.log.info(
                "re-load from S3: %d file(s) for application %s %s %s",
                len(keys),
                application_id,
                self.resource,
                day,
            )
            return keys
        hook = AppMetricaHook(self.appmetrica_conn_id)
        try:
            with hook.get_client() as client:
                result = extract_appmetrica(
                    client,
                    store,
                    application_id,
                    self.resource,
                    day,
                    _as_list(self.fields) or None,
                    date_dimension=str(self.date_dimension or "default"),
                    fmt=self.fmt,
                )
        except ConnectionMissing as exc:
            raise AirflowFailException(str(exc)) from exc
        except AppMetricaError as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(str(exc)) from exc
        except ValueError as exc:  # bad parameters: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        return result.keys


@task(task_id="plan")
def plan_appmetrica_days(appmetrica_conn_id: str = "appmetrica_default") -> list[dict[str, str]]:
    """The (application_id, resource, day) items of a run.

    Days: `start`..`end` from the params, else `schedule.default_day`. Applications:
    the `application_ids` param, else the connection's `application_ids` extra.
    """
    from dwh_helper.hooks.appmetrica import AppMetricaHook, application_ids_of
    from dwh_helper.hooks.connection_fields import ConnectionMissing
    from dwh_helper.operators.schedule import run_days

    context = get_current_context()
    params = context["params"]
    days = run_days(context)
    try:
        applications = application_ids_of(params.get("application_ids"), "params")
        if not applications:
            applications = AppMetricaHook(appmetrica_conn_id).application_ids
    except ConnectionMissing as exc:
        raise AirflowFailException(str(exc)) from exc
    if not applications:
        raise AirflowFailException(
            "no AppMetrica application to export: pass the application_ids param or set the "
            f'extra application_ids of connection {appmetrica_conn_id!r} (e.g. "1111,2222")'
        )
    resources = _as_list(params.get("resources")) or ["events"]
    unknown = [resource for resource in resources if resource not in RESOURCES]
    if unknown:
        raise AirflowFailException(
            f"params: resources {unknown} not supported; use {', '.join(RESOURCES)}"
        )
    items = [
        {"application_id": application, "resource": resource, "day": day.isoformat()}
        for day in days
        for application, resource in itertools.product(applications, resources)
    ]
    log.info("planned %d item(s): %s%s", len(items), items[:10], " ..." if len(items) > 10 else "")
    return items
