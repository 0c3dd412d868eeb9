"""A local S3 endpoint (moto's threaded server) for tests and the demo."""

from __future__ import annotations

import logging
from typing import Any

import boto3

DEFAULT_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class LocalS3:
    """moto's `ThreadedMotoServer` on a free port of 127.0.0.1."""

    def __init__(self, port: int = 0, region: str = "us-east-1") -> None:
        from moto.server import ThreadedMotoServer

        self.region = region
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> LocalS3:
        """Start serving; `endpoint_url` is set afterwards."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

    def client(self) -> Any:
        """A boto3 S3 client pointed at this server."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, **DEFAULT_CREDENTIALS
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket (no error when it exists)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
