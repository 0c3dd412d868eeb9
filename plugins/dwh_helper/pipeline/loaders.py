"""Which loader a raw file of each source goes through."""

from __future__ import annotations

from typing import Any

from dwh_helper.dwh.repository import Repository
from dwh_helper.pipeline.load import LoadResult
from dwh_helper.storage.s3 import ObjectStore

SOURCES = ("amplitude", "appmetrica")


def load_file(
    source: str, store: ObjectStore, key: str, repo: Repository, **options: Any
) -> LoadResult:
    """Load one raw file of `source` (`amplitude` or `appmetrica`) from S3 into the DWH."""
    if source == "amplitude":
        from dwh_helper.pipeline.amplitude import load_amplitude_file

        return load_amplitude_file(store, key, repo, **options)
    if source == "appmetrica":
        from dwh_helper.pipeline.appmetrica import load_appmetrica_file

        return load_appmetrica_file(store, key, repo, **options)
    raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
