"""The fast generated paths against the checked path (the value layer, value by value).

The fast path itself — `EventMapping.decode` + `map_record` for Amplitude, the generated
`RowFormatter.line` for AppMetrica, no fallback — either declines a record (raises) or gives
exactly the checked path's lines with nothing to report. On the sandbox day it must never
decline (a broken fast path fails here instead of silently becoming the slow one). Checked on
the sandbox day, on the issue's real-world-shaped dirty cases, and on generated records.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.amplitude_events import generate_hour
from devtools.sandbox.appmetrica import generate_rows
from dwh_helper.pipeline.appmetrica import day_window
from dwh_helper.transform.appmetrica_formatter import RowFormatter
from dwh_helper.transform.appmetrica_mapping import load_appmetrica_mapping
from dwh_helper.transform.event_mapping import amplitude_mapping

pytestmark = pytest.mark.unit

MAPPING = amplitude_mapping()
SANDBOX = generate_hour(374182, datetime(2024, 3, 2, 10, tzinfo=UTC), 9, 1500)


def fast(data: bytes):
    """The Amplitude fast path alone: lines, or None when it declines the record."""
    try:
        return MAPPING.map_record(MAPPING.decode(data))
    except Exception:  # noqa: BLE001 - declining is the fast path's way to say "not me"
        return None


def test_amplitude_fast_path_equals_the_checked_path_on_the_sandbox_day():
    for event in SANDBOX:
        data = json.dumps(event).encode()
        lines = fast(data)
        assert lines is not None, event["uuid"]  # the fast path never declines clean data
        checked = MAPPING.map_checked(data)
        assert lines == checked.lines
        assert checked.reports == [] and checked.repairs == 0


def _dirty_cases():
    from tests.dirty_cases import amplitude_dirty_cases

    return amplitude_dirty_cases(SANDBOX[0])


@pytest.mark.parametrize(("case", "raw", "expect"), _dirty_cases(), ids=lambda v: str(v)[:30])
def test_amplitude_fast_path_declines_every_dirty_case(case, raw, expect):
    lines = fast(raw)
    if case == "huge JSON number":
        # the one case left to PostgreSQL: an undecoded JSON field's number beyond numeric's
        # range; the loader's last line of defence stores NULL and reports it (see
        # tests/pipeline/test_dirty_records.py), as the checked path does
        assert (
            lines is not None
            and "1e999999" in dict((t.spec.name, x) for t, x, _ in lines)["tmp_event_properties"]
        )
        checked = MAPPING.map_checked(raw)
        assert [(r.table, r.column) for r in checked.reports] == [
            ("tmp_event_properties", "event_properties_json")
        ]
        return
    assert lines is None, case
    try:
        checked = MAPPING.map_checked(raw)
    except ValueError:
        assert "rejected" in expect
        return
    assert "rejected" not in expect
    assert len(checked.reports) == (1 if "nulled" in expect else 0)
    assert checked.repairs == expect.get("repaired", 0)


_TEXT = st.text(max_size=12)
_VALUE = st.one_of(
    st.none(),
    _TEXT,
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.sampled_from(
        [
            "2024-03-02 10:00:00.123456",
            "2024-03-02T10:00:00+03:00",
            "2022-W46-1",
            "2024-02-30 00:00:00",
            "５０９０７１",
            "5_5.75",
            "84141a73-5ed4-4a0c-9c1d-4c2f6f5b2b11",
            "::1",
            "999.1.1.1",
            "a\x00b",
            "-1",
            "",
            "N/A",
        ]
    ),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=10,
)
_FIELDS = [
    "user_id",
    "event_time",
    "session_id",
    "device_id",
    "event_type",
    "location_lat",
    "ip_address",
    "language",
    "event_id",
    "uuid",
    "amplitude_id",
    "city",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(_FIELDS), _VALUE, max_size=5),
    st.dictionaries(st.sampled_from(["event_properties", "user_properties", "plan"]), _JSON),
    st.booleans(),
)
def test_amplitude_fast_path_agrees_with_the_checked_path_on_generated_events(
    scalars, objects, ascii_only
):
    event = {**SANDBOX[1], **scalars, **objects}
    data = json.dumps(event, ensure_ascii=ascii_only).encode()
    lines = fast(data)
    try:
        checked = MAPPING.map_checked(data)
    except ValueError:
        assert lines is None  # what the checked path rejects, the fast path never maps
        return
    if lines is not None:
        assert lines == checked.lines
        assert checked.reports == [] and checked.repairs == 0


# -- AppMetrica ------------------------------------------------------------------------------

APP = "1111"
RESOURCE = load_appmetrica_mapping().resource("events")
ROWS = list(generate_rows("events", APP, *day_window(date(2024, 3, 2)), seed=9, events_per_day=800))
HEADER = list(ROWS[0])


def _formatter():
    return RowFormatter(RESOURCE, APP, header=HEADER)


def appmetrica_fast(formatter, row: dict[str, str]):
    try:
        return formatter.line([row[name] for name in HEADER])
    except Exception:  # noqa: BLE001 - declining
        return None


def test_appmetrica_fast_path_equals_the_checked_path_on_the_sandbox_day():
    formatter = _formatter()
    for row in ROWS:
        raw = [row[name] for name in HEADER]
        line = formatter.line(raw)  # never declines clean data
        checked = formatter.checked(raw)
        assert checked.lines[0][1] == line
        assert checked.reports == [] and checked.repairs == 0


def _appmetrica_dirty():
    from tests.dirty_cases import appmetrica_rows

    return appmetrica_rows()[1]


@pytest.mark.parametrize(("case", "row", "expect"), _appmetrica_dirty(), ids=lambda v: str(v)[:30])
def test_appmetrica_fast_path_declines_every_dirty_case(case, row, expect):
    formatter = _formatter()
    full = {**ROWS[0], **{k: v for k, v in row.items() if k in HEADER}}
    assert appmetrica_fast(formatter, full) is None, case
    raw = [full[name] for name in HEADER]
    try:
        checked = formatter.checked(raw)
    except ValueError:
        assert "rejected" in expect
        return
    assert "rejected" not in expect
    assert [r.column for r in checked.reports] == ([expect["nulled"]] if "nulled" in expect else [])
    assert checked.repairs == (1 if "repaired" in expect else 0)


_APPMETRICA_VALUE = st.one_of(
    _TEXT,
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.sampled_from(
        [
            "",
            "2024-03-02 10:00:00",
            "2024-03-02T10:00:00",
            "2024-02-30 10:00:00",
            "１７０９３５１８５３",
            "+1709351853",
            "1709351853.5",
            "true",
            "TRUE",
            "maybe",
            '{"a": [1, 2.5]}',
            '{"a": 1e999}',
            '{"a": "x\\u0000"}',
            "Mos\x00cow",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(HEADER), _APPMETRICA_VALUE, max_size=5))
def test_appmetrica_fast_path_agrees_with_the_checked_path_on_generated_rows(changes):
    formatter = _formatter()
    row = {**ROWS[3], **changes}
    raw = [row[name] for name in HEADER]
    line = appmetrica_fast(formatter, row)
    try:
        checked = formatter.checked(raw)
    except ValueError:
        assert line is None
        return
    if line is not None:
        assert checked.lines[0][1] == line
        assert checked.reports == [] and checked.repairs == 0


def test_amplitude_bytes_that_are_not_utf8_cost_the_value_only():
    data = json.dumps(SANDBOX[2]).encode().replace(b'"city": "', b'"city": "\xff', 1)
    assert fast(data) is None
    checked = MAPPING.map_checked(data)
    assert [(r.table, r.column, r.reason[:19]) for r in checked.reports] == [
        ("user_locations", "city", "not valid Unicode (")
    ]
    locations = dict((t.spec.name, text) for t, text, _ in checked.lines)["user_locations"]
    assert locations.split("\t")[3] == "\\N"
