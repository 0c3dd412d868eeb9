"""`/loads` over HTTP on the real PostgreSQL and moto's S3: the journal of real loads,
filtered and paginated, and the per-day summary as JSON and as an HTML page."""

from __future__ import annotations

import hashlib
import re
from datetime import date

import pytest

from devtools.sandbox.appmetrica import generate_rows, iter_body
from dwh_helper.pipeline.appmetrica import day_window, load_appmetrica_file, raw_key
from dwh_helper.pipeline.load import LoadError

pytestmark = [pytest.mark.db, pytest.mark.s3]

READ = {"Authorization": "OAuth demo-read-token"}
APP = "1111"
DAY1, DAY2 = date(2024, 3, 2), date(2024, 3, 3)


def _land(store, resource: str, day: date, per_day: int, cut: bool = False) -> tuple[str, int]:
    since, until = day_window(day)
    rows = list(generate_rows(resource, APP, since, until, seed=2, events_per_day=per_day))
    body = b"".join(iter_body(rows, tuple(rows[0]), "csv"))
    stored = body[: body.index(b"\n", len(body) // 2) + 1] if cut else body
    key = raw_key(APP, resource, day)
    store.client.put_object(
        Bucket=store.bucket,
        Key=key,
        Body=stored,
        Metadata={"size": str(len(body)), "sha256": hashlib.sha256(body).hexdigest()},
    )
    return key, len(rows)


@pytest.fixture
def journal(store, repo):
    """Three real loads: two files of DAY1 loaded, one of DAY2 failed (truncated)."""
    events, n_events = _land(store, "events", DAY1, 60)
    sessions, n_sessions = _land(store, "sessions_starts", DAY1, 200)
    broken, _ = _land(store, "events", DAY2, 60, cut=True)
    load_appmetrica_file(store, events, repo)
    load_appmetrica_file(store, sessions, repo)
    with pytest.raises(LoadError):
        load_appmetrica_file(store, broken, repo)
    return {"events": (events, n_events), "sessions": (sessions, n_sessions), "broken": broken}


def test_the_journal_newest_first_filtered_and_paginated(client, journal):
    body = client.get("/loads", headers=READ).json()
    keys = [row["s3_key"] for row in body["loads"]]
    assert keys == [journal["broken"], journal["sessions"][0], journal["events"][0]]
    assert body["total"] == 3 and body["next_offset"] is None
    failed = body["loads"][0]
    assert failed["status"] == "failed" and "re-extract" in failed["error"]
    loaded = body["loads"][2]
    assert loaded["status"] == "loaded" and loaded["verified"] is True
    assert loaded["rows_read"] == journal["events"][1]
    assert loaded["rows_inserted"] == {"events": journal["events"][1]}
    assert loaded["finished_at"] > loaded["started_at"] and loaded["duration_seconds"] > 0

    def keys_of(**params) -> list[str]:
        answer = client.get("/loads", headers=READ, params=params)
        assert answer.status_code == 200, answer.text
        return [row["s3_key"] for row in answer.json()["loads"]]

    assert keys_of(status="failed") == [journal["broken"]]
    assert keys_of(day="2024-03-02") == [journal["sessions"][0], journal["events"][0]]
    assert keys_of(key=journal["events"][0]) == [journal["events"][0]]
    assert keys_of(source="appmetrica", status="loaded", limit=1) == [journal["sessions"][0]]
    assert keys_of(source="amplitude") == []
    page = client.get("/loads", headers=READ, params={"limit": 2}).json()
    assert page["count"] == 2 and page["next_offset"] == 2
    rest = client.get("/loads", headers=READ, params={"limit": 2, "offset": 2}).json()
    assert [r["s3_key"] for r in rest["loads"]] == [journal["events"][0]]
    assert rest["next_offset"] is None


def test_refusals(client, journal):
    assert client.get("/loads").status_code == 401
    bad = client.get("/loads", headers=READ, params={"status": "done", "limit": 0})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} >= {"status", "limit"}
    wrong_order = client.get(
        "/loads/summary", headers=READ, params={"since": "2024-03-05", "until": "2024-03-01"}
    )
    assert wrong_order.status_code == 422 and "since" in wrong_order.json()["detail"]


def test_the_day_summary_as_json(client, journal):
    answer = client.get(
        "/loads/summary", headers=READ, params={"since": "2024-03-01", "until": "2024-03-05"}
    )
    assert answer.status_code == 200, answer.text
    days = answer.json()["days"]
    assert [(d["day"], d["source"], d["status"], d["files"]) for d in days] == [
        ("2024-03-03", "appmetrica", "failed", 1),
        ("2024-03-02", "appmetrica", "complete", 2),
    ]
    complete = days[1]
    total = journal["events"][1] + journal["sessions"][1]
    assert (complete["rows_read"], complete["rows_inserted"], complete["rows_rejected"]) == (
        total,
        total,
        0,
    )
    assert complete["values_nulled"] == 0 and complete["last_load_at"]
    assert days[0]["rows_inserted"] == 0


def test_the_day_summary_as_an_html_page_with_a_bar_per_day(client, journal):
    answer = client.get(
        "/loads/summary.html", headers=READ, params={"since": "2024-03-01", "until": "2024-03-05"}
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    rows = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td>(.*?)</tr>", page)
    assert [day for day, _ in rows] == ["2024-03-03", "2024-03-02"]
    total = journal["events"][1] + journal["sessions"][1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", rows[1][1])
    assert cells[:7] == ["appmetrica", "complete", "2", str(total), str(total), "0", "0"]
    assert f'title="{total} rows read" style="width:100.0%' in rows[1][1]
    assert 'style="width:0.0%' in rows[0][1] and "failed" in rows[0][1]
    assert "<script" not in page
