"""`MigrateUserPropertiesOperator`: the user-properties ETL as an Airflow task."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dwh_helper.hooks.dwh import DWH_CONN_ID

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _optional_text(value: Any) -> str | None:
    """A templated value that may render as "" or "None" when its Param is unset."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "null") else text


def _as_int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise AirflowFailException(f"{name} must be an integer, got {value!r}") from None


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE or text == "none":
        return False
    raise AirflowFailException(f"{name} must be true or false, got {value!r}")


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

        batch_size = _as_int(self.batch_size, "batch_size")
        strict = _as_bool(self.strict, "strict")
        start_after = _optional_text(self.start_after)
        try:
            mapping = load_field_mappings(_optional_text(self.mapping_path))
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
                    since=_optional_text(self.since),
                    until=_optional_text(self.until),
                    batch_size=batch_size,
                    strict=strict,
                    mapping=mapping,
                    store=store,
                    key=_optional_text(self.key),
                    start_after=_as_int(start_after, "start_after") if start_after else None,
                )
            except MigrationInterrupted as exc:
                self.log.error("%s", exc.result.summary())
                raise AirflowException(str(exc)) from exc
            except RunInProgress as exc:
                raise AirflowException(str(exc)) from exc
            except ValueError as exc:
                raise AirflowFailException(f"invalid arguments: {exc}") from exc
        self.log.info("%s", result.summary())
        limit = self.max_reject_ratio
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
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from dwh_helper.config import S3Settings
        from dwh_helper.storage.s3 import ObjectStore

        bucket = self.bucket or S3Settings().bucket_name
        if not bucket:
            raise AirflowFailException(
                "source 's3' needs a bucket: pass bucket=... or set S3_BUCKET_NAME"
            )
        if not _optional_text(self.key):
            raise AirflowFailException("source 's3' needs key=... (the raw file's S3 key)")
        return ObjectStore(S3Hook(aws_conn_id=self.aws_conn_id).get_conn(), bucket)
