"""`MigrateUserPropertiesOperator`: the user-properties ETL as an Airflow task."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dwh_helper.hooks.dwh import DWH_CONN_ID
from dwh_helper.operators.params import (
    as_bool,
    as_int,
    bad_param,
    optional_int,
    optional_moment,
    optional_text,
)


class MigrateUserPropertiesOperator(BaseOperator):
    """Run `migrate_user_properties` on the DWH connection; the result dict goes to XCom.

    A run that stops part way raises a retryable error: its committed batches
    stay, and the retry continues where it stopped. A bad mapping file or bad
    arguments fail without retries; so does a run whose share of records
    rejected for the first time exceeds `max_reject_ratio` (default
    `ETL_REJECT_RATIO`), after everything else was committed.
    """

    template_fields: Sequence[str] = (
        "since",
        "until",
        "batch_size",
        "strict",
        "key",
        "start_after",
        "mapping_path",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        since: Any = None,
        until: Any = None,
        batch_size: Any = 5000,
        strict: Any = False,
        source: str = "tmp_table",
        key: str | None = None,
        start_after: Any = None,
        mapping_path: str | None = None,
        max_reject_ratio: float | None = None,
        dwh_conn_id: str = DWH_CONN_ID,
        aws_conn_id: str = "aws_default",
        bucket: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.since = since
        self.until = until
        self.batch_size = batch_size
        self.strict = strict
        self.source = source
        self.key = key
        self.start_after = start_after
        self.mapping_path = mapping_path
        self.max_reject_ratio = max_reject_ratio
        self.dwh_conn_id = dwh_conn_id
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    def execute(self, context: Any) -> dict[str, Any]:
        """Run the step; returns its result as a dict (XCom)."""
        from dwh_helper.dwh.repository import Repository
        from dwh_helper.hooks.dwh import dwh_connection
        from dwh_helper.pipeline.user_properties import (
            MigrationInterrupted,
            RunInProgress,
            migrate_user_properties,
        )
        from dwh_helper.transform.field_mapping import MappingError, load_field_mappings

        batch_size = as_int(self.batch_size, "batch_size", minimum=1)
        strict = as_bool(self.strict, "strict")
        start_after = optional_int(self.start_after, "start_after", minimum=0)
        since = optional_moment(self.since, "since")
        until = optional_moment(self.until, "until")
        if self.source not in ("tmp_table", "s3"):
            raise bad_param("source", self.source, "tmp_table or s3")
        limit = self.max_reject_ratio
        if limit is not None and not 0 <= limit <= 1:
            raise bad_param("max_reject_ratio", limit, "a share between 0 and 1")
        try:
            mapping = load_field_mappings(optional_text(self.mapping_path))
        except MappingError as exc:
            raise AirflowFailException(str(exc)) from None
        store = self._store() if self.source == "s3" else None
        with ExitStack() as stack:
            conn = stack.enter_context(dwh_connection(self.dwh_conn_id))
            # tmp_table reads the next batch on a second connection while the first writes
            reader = (
                stack.enter_context(dwh_connection(self.dwh_conn_id))
                if self.source == "tmp_table"
                else None
            )
            try:
                result = migrate_user_properties(
                    Repository(conn),
                    reader=reader,
                    source=self.source,  # type: ignore[arg-type]
                    since=since,
                    until=until,
                    batch_size=batch_size,
                    strict=strict,
                    mapping=mapping,
                    store=store,
                    key=optional_text(self.key),
                    start_after=start_after,
                )
            except MigrationInterrupted as exc:
                self.log.error("%s", exc.result.summary())
                raise AirflowException(str(exc)) from exc
            except RunInProgress as exc:
                raise AirflowException(str(exc)) from exc
            except ValueError as exc:
                raise AirflowFailException(f"invalid arguments: {exc}") from exc
        self.log.info("%s", result.summary())
        if limit is None:
            from dwh_helper.config import EtlSettings

            limit = EtlSettings().reject_ratio
        if result.new_reject_ratio > limit:
            raise AirflowFailException(
                f"{result.rejected - result.rejected_before} records were rejected for the first "
                f"time ({result.new_reject_ratio:.2%} > max_reject_ratio {limit:.2%}); they are "
                "in load_rejects (source 'user_properties') and stay pending: fix the mapping "
                "(field_mappings.yaml) or the data, then run again"
            )
        return result.to_dict()

    def _store(self) -> Any:
        from dwh_helper.hooks.s3 import object_store

        if not optional_text(self.key):
            raise bad_param("key", self.key, "the raw file's S3 key when source is 's3'")
        return object_store(self.aws_conn_id, self.bucket)
