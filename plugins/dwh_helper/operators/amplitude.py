"""AmplitudeToS3Operator: export one UTC day of one Amplitude project to S3, unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from dwh_helper.config import AMPLITUDE_SOURCES
from dwh_helper.operators.params import as_bool, as_day, bad_param, optional_text


class AmplitudeToS3Operator(BaseOperator):
    """Export `day` (YYYY-MM-DD, UTC) of Amplitude project `source` into the raw bucket.

    Returns the S3 keys written (empty for a day without events). With
    `reload_from_s3` it calls nothing upstream and returns the keys already in S3.
    Bad credentials, a window still incomplete and an hour over Amplitude's
    size limit fail the task without retries; transient faults are retried by
    the client first and then by Airflow.
    """

    template_fields: Sequence[str] = ("source", "day", "reload_from_s3")
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        source: str,
        day: str | date,
        reload_from_s3: bool | str = False,
        amplitude_conn_id: str | None = None,
        aws_conn_id: str = "aws_default",
        bucket: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.day = day
        self.reload_from_s3 = reload_from_s3
        self.amplitude_conn_id = amplitude_conn_id
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    def execute(self, context: Context) -> list[str]:
        """Export (or list, when re-loading) the day's archives; returns their S3 keys."""
        from dwh_helper.hooks.amplitude import AmplitudeHook
        from dwh_helper.hooks.connection_fields import ConnectionMissing
        from dwh_helper.hooks.s3 import object_store
        from dwh_helper.pipeline.amplitude import day_keys, extract_amplitude
        from dwh_helper.sources.amplitude import AmplitudeError

        source = optional_text(self.source)
        if source not in AMPLITUDE_SOURCES:
            raise bad_param("source", self.source, f"one of {', '.join(AMPLITUDE_SOURCES)}")
        day = as_day(self.day, "day")
        reload_from_s3 = as_bool(self.reload_from_s3, "reload_from_s3")
        store = object_store(self.aws_conn_id, self.bucket)
        if reload_from_s3:
            keys = day_keys(store, source, day)
            self.log.info("re-load from S3: %d archive(s) for %s %s", len(keys), source, day)
            return keys
        hook = AmplitudeHook(self.amplitude_conn_id or f"amplitude_{source}")
        try:
            with hook.get_client() as client:
                result = extract_amplitude(client, store, source, day)
        except ConnectionMissing as exc:
            raise AirflowFailException(str(exc)) from exc
        except AmplitudeError as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(str(exc)) from exc
        return result.keys
