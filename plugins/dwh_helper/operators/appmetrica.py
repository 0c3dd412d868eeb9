"""AppMetricaToS3Operator (one day of one resource of one application → S3) and the plan's axes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from dwh_helper.catalogue.appmetrica import RESOURCE_NAMES
from dwh_helper.operators.params import as_bool, as_day, as_list, bad_param, optional_text
from dwh_helper.operators.schedule import Dimension

RESOURCES = RESOURCE_NAMES  # the field catalogue's resources


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

        application_id = optional_text(self.application_id) or ""
        day = as_day(self.day, "day")
        if not application_id.isdigit():
            raise bad_param("application_id", self.application_id, "a numeric application id")
        if self.resource not in RESOURCES:
            raise bad_param("resource", self.resource, f"one of {', '.join(RESOURCES)}")
        fields = as_list(self.fields, "fields") or None
        date_dimension = optional_text(self.date_dimension) or "default"
        reload_from_s3 = as_bool(self.reload_from_s3, "reload_from_s3")
        store = object_store(self.aws_conn_id, self.bucket)
        if reload_from_s3:
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
                    fields,
                    date_dimension=date_dimension,
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


def connection_application_ids(appmetrica_conn_id: str = "appmetrica_default"):  # noqa: ANN201
    """The `application_id` default of the plan: the connection's `application_ids` extra."""

    def read() -> list[str]:
        from dwh_helper.hooks.appmetrica import AppMetricaHook
        from dwh_helper.hooks.connection_fields import ConnectionMissing

        try:
            return AppMetricaHook(appmetrica_conn_id).application_ids
        except ConnectionMissing as exc:
            raise AirflowFailException(str(exc)) from exc

    return read


def appmetrica_dimensions(appmetrica_conn_id: str = "appmetrica_default") -> list[Dimension]:
    """The plan's axes: applications (param, else the connection's extra) and resources."""
    return [
        Dimension(
            "application_id",
            "application_ids",
            numeric=True,
            default=connection_application_ids(appmetrica_conn_id),
            help=(
                "no AppMetrica application to export: pass the application_ids param or set "
                f"the extra application_ids of connection {appmetrica_conn_id!r} "
                '(e.g. "1111,2222")'
            ),
        ),
        Dimension("resource", "resources", choices=RESOURCES, default=lambda: ["events"]),
    ]
