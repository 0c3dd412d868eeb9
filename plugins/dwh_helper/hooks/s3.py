"""The raw-file bucket on Airflow: `aws_default` (S3Hook) + `S3_BUCKET_NAME` → ObjectStore."""

from __future__ import annotations

from dwh_helper.config import S3Settings, SettingsError
from dwh_helper.storage.s3 import MB, ObjectStore

AWS_CONN_ID = "aws_default"


def object_store(aws_conn_id: str = AWS_CONN_ID, bucket: str | None = None) -> ObjectStore:
    """The one way operators reach the raw bucket: an ObjectStore through the S3Hook.

    The endpoint and credentials come from the Airflow AWS connection (endpoint in extras);
    without `bucket` the bucket is `S3_BUCKET_NAME`, and its absence fails the task at once.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk.exceptions import AirflowFailException

    try:
        settings = S3Settings()
        name = bucket or settings.require_bucket()
    except SettingsError as exc:
        raise AirflowFailException(f"{exc} (or pass bucket=... to the operator)") from exc
    return ObjectStore(
        S3Hook(aws_conn_id=aws_conn_id).get_conn(),
        name,
        multipart_threshold=settings.multipart_threshold_mb * MB,
    )
