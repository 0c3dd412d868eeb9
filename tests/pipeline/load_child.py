"""A loader in a process of its own, for the concurrency and kill tests.

The processes are forked from the test process (see `context`), so each loader starts in
milliseconds.
`run_load(spec)` loads one key as the task would and writes its summary (or its error) as
JSON to `spec["out"]`; the exit code is 0 on success, 3 on a LoadError.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import boto3

from devtools.sandbox.s3 import DEFAULT_CREDENTIALS
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.pipeline.load import LoadError
from dwh_helper.pipeline.loaders import load_file
from dwh_helper.storage.s3 import ObjectStore


def run_load(spec: dict[str, Any]) -> None:
    """Load one key; the summary or the error goes to spec['out'] as JSON."""

    client = boto3.client(
        "s3", endpoint_url=spec["endpoint"], region_name=spec["region"], **DEFAULT_CREDENTIALS
    )
    store = ObjectStore(client, spec["bucket"])
    out = Path(spec["out"])
    with open_connection(spec["dsn"]) as conn:
        try:
            result = load_file(
                spec["source"],
                store,
                spec["key"],
                Repository(conn),
                temp_dir=Path(spec["temp_dir"]) if spec.get("temp_dir") else None,
            )
        except LoadError as exc:
            out.write_text(json.dumps({"error": str(exc)}))
            sys.exit(3)
    out.write_text(json.dumps(result.as_dict()))


def context() -> Any:
    """Processes forked from the test process, which has the loader imported already (a fork
    server or spawn re-imports it: seconds per loader on a busy machine). The loader uses
    only what it opens itself: its own database connection and S3 client."""
    return multiprocessing.get_context("fork")
