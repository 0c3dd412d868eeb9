"""Issue 12 for the user-properties ETL: a raw file of good events plus one event per dirty case,
through the real run against PostgreSQL and moto's S3 — each dirty event repaired, stored NULL
and reported, or rejected, exactly as docs/mappings.md says; the counts match; no raw value in
the logs or the result's error."""

from __future__ import annotations

import gzip
import io
import logging
import zipfile

import pytest

from dwh_helper.pipeline.user_properties import migrate_user_properties
from tests.user_properties_dirty import (
    GOOD,
    SECRET_VALUES,
    check_dirty_records,
    check_good_records,
    dirty_lines,
)

pytestmark = [pytest.mark.db, pytest.mark.s3]

KEY = "raw/amplitude/web/2024/03/02/web_20240302.zip"
ENTRY = "374182/374182_2024-03-02_10#0.json.gz"


def archive(lines: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(ENTRY, gzip.compress(b"\n".join(lines) + b"\n"))
    return buffer.getvalue()


def test_dirty_user_properties_file_loads_as_documented(repo, dwh_conn, store, caplog):
    good, dirty, lines = dirty_lines()
    store.client.put_object(Bucket=store.bucket, Key=KEY, Body=archive(lines))
    rejected = sum("rejected" in expect for _c, _r, expect in dirty)
    nulled = sum("nulled" in expect for _c, _r, expect in dirty)
    repaired = sum("repaired" in expect for _c, _r, expect in dirty)
    assert GOOD >= 200 and (rejected, nulled, repaired) == (9, 2, 2)

    with caplog.at_level(logging.DEBUG):
        result = migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=100)
    assert result.status == "completed" and result.error is None
    assert result.last_line == len(lines)
    assert (result.processed, result.rejected, result.rejected_before) == (
        len(lines) - rejected,
        rejected,
        0,
    )
    assert (result.values_nulled, result.values_repaired) == (nulled, repaired)
    check_good_records(dwh_conn, good)
    check_dirty_records(dwh_conn, dirty, KEY)
    counts = dict(dwh_conn.execute("SELECT kind, count(*) FROM load_rejects GROUP BY kind"))
    assert counts == {"record": rejected, "value": nulled}
    assert dwh_conn.execute(
        "SELECT count(*) FROM load_rejects WHERE entry = %s AND line > 0", (ENTRY,)
    ).fetchone() == (rejected + nulled,)
    logged = caplog.text + result.summary()
    for secret in SECRET_VALUES:
        assert secret not in logged

    # a re-run of the same file replaces its reports: the same tables, the same counts
    tables = dwh_conn.execute(
        "SELECT (SELECT count(*) FROM changeable_user_properties), "
        "(SELECT count(*) FROM permanent_user_properties), (SELECT count(*) FROM load_rejects)"
    ).fetchone()
    again = migrate_user_properties(repo, source="s3", store=store, key=KEY, batch_size=100)
    assert (again.rejected, again.rejected_before, again.values_nulled) == (
        rejected,
        rejected,
        nulled,
    )
    assert (again.permanent_inserted, again.changeable_inserted) == (0, 0)
    assert (
        dwh_conn.execute(
            "SELECT (SELECT count(*) FROM changeable_user_properties), "
            "(SELECT count(*) FROM permanent_user_properties), (SELECT count(*) FROM load_rejects)"
        ).fetchone()
        == tables
    )
