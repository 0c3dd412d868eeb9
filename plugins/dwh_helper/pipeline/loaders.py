"""Which loader a raw file of each source goes through."""

from __future__ import annotations

from typing import Any

from dwh_helper.dwh.repository import Repository
from dwh_helper.pipeline.load import LoadError, LoadResult, as_load_error
from dwh_helper.storage.s3 import ObjectStore

SOURCES = ("amplitude", "appmetrica")


def load_file(
    source: str, store: ObjectStore, key: str, repo: Repository, **options: Any
) -> LoadResult:
    """Load one raw file of `source` (`amplitude` or `appmetrica`) from S3 into the DWH.

    Every failure is a LoadError naming the key, `retryable` set honestly (see `as_load_error`).
    """
    if source not in SOURCES:
        raise LoadError(key, f"unknown source {source!r}; use one of {SOURCES}")
    try:
        if source == "amplitude":
            from dwh_helper.pipeline.amplitude import load_amplitude_file

            return load_amplitude_file(store, key, repo, **options)
        from dwh_helper.pipeline.appmetrica import load_appmetrica_file

        return load_appmetrica_file(store, key, repo, **options)
    except LoadError:
        raise
    except Exception as exc:  # before or after the file's transaction: head, partitions
        raise as_load_error(key, exc) from exc
