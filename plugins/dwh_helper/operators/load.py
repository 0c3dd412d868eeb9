"""S3ToDwhOperator: load raw files from S3 into the DWH, one transaction per file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from dwh_helper.config import EtlSettings
from dwh_helper.operators.params import as_list, bad_param, optional_int, optional_text


class S3ToDwhOperator(BaseOperator):
    """Load each raw file in `keys` (S3 keys in the raw bucket) with the loader of `source`.

    Returns `{"files", "rows_read", "inserted": {table: rows}, "rejected", "keys"}`.
    A file whose records cannot be mapped beyond the reject ratio, or a corrupt
    file, fails the task without retries (re-running would not help; fix and re-load).
    """

    template_fields: Sequence[str] = ("keys", "source")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        keys: Sequence[str] | str,
        source: str = "amplitude",
        dwh_conn_id: str = "dwh_postgres",
        aws_conn_id: str = "aws_default",
        bucket: str | None = None,
        batch_size: int | None = None,
        reject_ratio: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keys = keys
        self.source = source
        self.dwh_conn_id = dwh_conn_id
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket
        self.batch_size = batch_size
        self.reject_ratio = reject_ratio

    def execute(self, context: Context) -> dict[str, Any]:
        """Load every key; one summary line per file in the log."""
        from dwh_helper.dwh.repository import Repository
        from dwh_helper.hooks.dwh import dwh_connection
        from dwh_helper.hooks.s3 import object_store
        from dwh_helper.pipeline.load import LoadError
        from dwh_helper.pipeline.loaders import SOURCES, load_file

        keys = as_list(self.keys, "keys")
        source = optional_text(self.source)
        if source not in SOURCES:
            raise bad_param("source", self.source, f"one of {', '.join(SOURCES)}")
        reject_ratio = self.reject_ratio
        if reject_ratio is not None and not 0 <= reject_ratio <= 1:
            raise bad_param("reject_ratio", reject_ratio, "a share between 0 and 1")
        etl = EtlSettings()
        options = {
            "batch_size": optional_int(self.batch_size, "batch_size", minimum=1)
            or etl.load_batch_size,
            "reject_ratio": etl.reject_ratio if reject_ratio is None else reject_ratio,
        }
        summary: dict[str, Any] = {
            "files": 0,
            "rows_read": 0,
            "inserted": {},
            "rejected": 0,
            "keys": keys,
        }
        if not keys:
            self.log.info("no raw files to load (an empty day)")
            return summary
        store = object_store(self.aws_conn_id, self.bucket)
        with dwh_connection(self.dwh_conn_id) as conn:
            repo = Repository(conn)
            for key in keys:
                try:
                    result = load_file(source, store, key, repo, **options)
                except LoadError as exc:
                    if exc.retryable:
                        raise
                    raise AirflowFailException(str(exc)) from exc
                summary["files"] += 1
                summary["rows_read"] += result.rows_read
                summary["rejected"] += result.rejected
                for table, count in result.inserted.items():
                    summary["inserted"][table] = summary["inserted"].get(table, 0) + count
        self.log.info(
            "loaded %d file(s): %d records read, %d rejected, inserted %s",
            summary["files"],
            summary["rows_read"],
            summary["rejected"],
            summary["inserted"],
        )
        return summary
