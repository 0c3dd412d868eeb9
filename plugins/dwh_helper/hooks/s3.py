"""The raw-file bucket on Airflow: `aws_default` (S3Hook) + `S3_BUCKET_NAME` → ObjectStore."""

from __future__ import annotations

from dwh_helper.config import S3Settings
from dwh_helper.storage.s3 import MB, ObjectStore

AWS_CONN_ID = "aws_default"


def object_store(aws_conn_id: str = AWS_CONN_ID, bucket: str | None = None) -> ObjectStore:
    """An ObjectStore on the raw bucket through the Airflow AWS connection (endpoint in extras)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    settings = S3Settings()
    return ObjectStore(
        S3Hook(aws_conn_id=aws_conn_id).get_conn(),
        bucket or settings.require_bucket(),
        multipart_threshold=settings.multipart_threshold_mb * MB,
    )
