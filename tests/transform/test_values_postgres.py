"""The value layer's contract, value by value, against the real PostgreSQL.

A value `transform.values` accepts is accepted by PostgreSQL unchanged (its COPY text goes in
through COPY, the stored value comes back equal to what the layer says it is); a value it
refuses raises InvalidValue with a reason (and the mapping names the column and the value).
Lists of hand-picked values per kind, then property-based ones (hypothesis).
"""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwh_helper.transform import values
from dwh_helper.transform.values import InvalidValue, Repairs

pytestmark = pytest.mark.db

COLUMN = {
    "text": "text",
    "bigint": "bigint",
    "integer": "integer",
    "uint64": "numeric(20,0)",
    "double": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "unix_seconds": "timestamptz",
    "plain_datetime": "timestamp",
    "json": "jsonb",
    "uuid": "uuid",
    "inet": "inet",
}


@pytest.fixture
def stored(dwh_conn: psycopg.Connection):
    """stored(kind, copy_text) -> the value PostgreSQL keeps after COPY of that text."""
    dwh_conn.execute("SET TIME ZONE 'UTC'")
    dwh_conn.execute(
        "CREATE TEMP TABLE probe ("
        + ", ".join(f"{kind} {sql}" for kind, sql in COLUMN.items())
        + ")"
    )

    def store(kind: str, copy_text: str):
        dwh_conn.execute("TRUNCATE probe")
        with dwh_conn.cursor() as cursor:
            with cursor.copy(f"COPY probe ({kind}) FROM STDIN") as copy:
                copy.write((copy_text + "\n").encode())
        return dwh_conn.execute(f"SELECT {kind} FROM probe").fetchone()[0]

    return store


ACCEPTED: list[tuple[str, object, object]] = [
    # (kind, value, what PostgreSQL must then hold)
    ("text", "plain", "plain"),
    ("text", "tab\there\nnew\\line\r", "tab\there\nnew\\line\r"),
    ("text", "Ёлка ◊ 😀", "Ёлка ◊ 😀"),
    ("text", "\\N", "\\N"),
    ("text", 12, "12"),
    ("text", True, "true"),
    ("bigint", "9223372036854775807", 2**63 - 1),
    ("bigint", "-9223372036854775808", -(2**63)),
    ("bigint", "+42", 42),
    ("bigint", "007", 7),
    ("bigint", 5.0, 5),
    ("integer", 2**31 - 1, 2**31 - 1),
    ("uint64", "18446744073709551615", 2**64 - 1),
    ("double", "1e308", 1e308),
    ("double", "-1.5", -1.5),
    ("double", ".5", 0.5),
    ("double", "4e-320", 4e-320),
    ("double", 0.1, 0.1),
    ("double", 3, 3.0),
    ("boolean", "true", True),
    ("boolean", False, False),
    ("timestamp", "2022-11-14 00:57:32.668000", datetime(2022, 11, 14, 0, 57, 32, 668000)),
    ("timestamp", "2022-11-14 00:57:32", datetime(2022, 11, 14, 0, 57, 32)),
    ("timestamp", "2022-11-14T00:57:32.5", datetime(2022, 11, 14, 0, 57, 32, 500000)),
    ("timestamp", "2022-11-14T03:57:32+03:00", datetime(2022, 11, 14, 0, 57, 32)),
    ("timestamp", "2022-11-14T03:57:32+0300", datetime(2022, 11, 14, 0, 57, 32)),
    ("timestamp", "2022-11-13T21:57:32-03", datetime(2022, 11, 14, 0, 57, 32)),
    ("timestamp", "2022-11-14T00:57:32Z", datetime(2022, 11, 14, 0, 57, 32)),
    ("timestamp", "2024-02-29 23:59:59.999999", datetime(2024, 2, 29, 23, 59, 59, 999999)),
    ("unix_seconds", "1709351853", datetime(2024, 3, 2, 3, 57, 33, tzinfo=UTC)),
    ("unix_seconds", "-86401", datetime(1969, 12, 30, 23, 59, 59, tzinfo=UTC)),
    ("unix_seconds", "253402300799", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("plain_datetime", "2024-02-29 23:59:59", datetime(2024, 2, 29, 23, 59, 59)),
    ("json", {"a": [1, 2.5, None, True], "b": "ё"}, {"a": [1, 2.5, None, True], "b": "ё"}),
    ("json", {"big": 123456789012345678901234567890}, {"big": 123456789012345678901234567890}),
    ("uuid", "54050f2a-63b7-11ed-ae7f-79799fc6c6bf", "54050f2a-63b7-11ed-ae7f-79799fc6c6bf"),
    ("uuid", "54050F2A63B711EDAE7F79799FC6C6BF", "54050f2a-63b7-11ed-ae7f-79799fc6c6bf"),
    ("inet", "112.198.27.2", "112.198.27.2"),
    ("inet", "::ffff:5.255.232.147", "::ffff:5.255.232.147"),
]


@pytest.mark.parametrize(("kind", "value", "held"), ACCEPTED)
def test_accepted_values_are_stored_unchanged(stored, kind, value, held):
    text = values.COPY_CASTS[kind](value)
    got = stored(kind, text)
    if kind == "uuid":
        got = str(got)
    if kind == "inet":
        got, held = ipaddress.ip_address(str(got)), ipaddress.ip_address(held)
    if kind == "uint64":
        got = int(got)
    assert got == held


def _nested(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


REFUSED: list[tuple[str, object, str]] = [
    ("text", "lone \ud800 surrogate", "not valid Unicode"),
    ("text", "bytes \udcff that were not UTF-8", "not valid Unicode"),
    ("bigint", "５０９０７１", "not an integer"),
    ("bigint", "1_000", "not an integer"),
    ("bigint", " 12", "not an integer"),
    ("bigint", "٣", "not an integer"),
    ("bigint", "9223372036854775808", "out of range"),
    ("bigint", True, "boolean"),
    ("bigint", 1.5, "whole number"),
    ("integer", 2**31, "out of range"),
    ("uint64", "-1", "out of range"),
    ("double", "5_5.75", "not a number"),
    ("double", "１.５", "not a number"),
    ("double", "infinity", "not a number"),
    ("double", "nan", "not a number"),
    ("double", "1e400", "not a finite number"),
    ("double", "1e-400", "round to 0"),
    ("double", float("inf"), "not a finite number"),
    ("boolean", "yes", "not a boolean"),
    ("timestamp", "2022-W46-1", "not a timestamp"),
    ("timestamp", "2022-11-14 00:57:32,668", "not a timestamp"),
    ("timestamp", "2022-11-14T00", "not a timestamp"),
    ("timestamp", "2022-11-14", "not a timestamp"),
    ("timestamp", "20221114T005732", "not a timestamp"),
    ("timestamp", "2022-11-14 24:00:00", "not a valid"),
    ("timestamp", "2022-11-14 23:59:60", "not a valid"),
    ("timestamp", "2022-02-30 00:00:00", "not a valid"),
    ("timestamp", "0000-01-01 00:00:00", "not a valid"),
    ("timestamp", "2022-11-14 00:57:32.1234567", "not a timestamp"),
    ("timestamp", "２０２２-11-14 00:57:32", "not a timestamp"),
    ("timestamp", 1668387383, "not a timestamp string"),
    ("unix_seconds", "1709351853.5", "expected Unix seconds"),
    ("unix_seconds", "１７０９３５１８５３", "expected Unix seconds"),
    ("unix_seconds", "99999999999999", "out of range"),
    ("plain_datetime", "2022-11-14T00:57:32", "expected 'YYYY-MM-DD hh:mm:ss'"),
    ("plain_datetime", "yyyy-mm-dd hh:mm:ss", "expected 'YYYY-MM-DD hh:mm:ss'"),
    ("plain_datetime", "2022-W46-1 00:00:0", "expected 'YYYY-MM-DD hh:mm:ss'"),
    ("json", {"s": "\ud800"}, "not valid Unicode"),
    ("json", _nested(300), "nested deeper"),
    ("uuid", "xyz", "not a uuid"),
    ("uuid", "{54050f2a-63b7-11ed-ae7f-79799fc6c6bf}", "not a uuid"),
    ("inet", "999.1.1.1", "not an IP address"),
    ("inet", "１.１.１.１", "not an IP address"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("kind", "value", "reason"), REFUSED)
def test_refused_values_raise_with_a_reason(kind, value, reason):
    with pytest.raises(InvalidValue, match=reason):
        values.COPY_CASTS[kind](value)


JSON_TEXTS_ACCEPTED = [
    ('{"n": 1e400}', Decimal("1e400")),
    ('{"n": 1e-400}', Decimal("1e-400")),
    ('{"n": 1.10}', Decimal("1.10")),
    ('{"n": 123456789012345678901234567890.5}', Decimal("123456789012345678901234567890.5")),
    ('{"n": 1e131071}', Decimal("1e131071")),
]


@pytest.mark.parametrize(("raw", "number"), JSON_TEXTS_ACCEPTED)
def test_json_numbers_postgres_holds_are_kept_exactly(stored, dwh_conn, raw, number):
    text = values.json_text(raw)
    dwh_conn.execute("TRUNCATE probe")
    with dwh_conn.cursor() as cursor, cursor.copy("COPY probe (json) FROM STDIN") as copy:
        copy.write((text + "\n").encode())
    same = dwh_conn.execute(
        "SELECT (json->>'n')::numeric = %s::numeric FROM probe", (str(number),)
    ).fetchone()[0]
    assert same is True


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"n": 1e999999}', "out of range for PostgreSQL"),
        ('{"n": 1e131072}', "out of range for PostgreSQL"),
        ('{"n": 1e-16384}', "too many decimal places"),
        ('{"n": NaN}', "NaN is not JSON"),
        ('{"n": Infinity}', "Infinity is not JSON"),
        ('{"s": "\\ud800"}', "not valid Unicode"),
        ("[" * 5000 + "]" * 5000, "nested deeper"),
        ('{"a": ', "not valid JSON"),
    ],
)
def test_json_texts_refused_per_value(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        values.json_text(raw)


def test_postgres_refuses_what_the_layer_refuses_in_json(dwh_conn):
    """The limits are PostgreSQL's own: just past them, PostgreSQL refuses too."""
    for raw in ('{"n": 1e131072}', '{"n": 1e-16384}', '{"s": "\\u0000"}', '{"s": "\\ud800"}'):
        with pytest.raises(psycopg.DataError):
            dwh_conn.execute("SELECT %s::text::jsonb", (raw,))


def test_nul_is_removed_and_counted_then_stored(stored):
    repairs = Repairs()
    assert stored("text", values.text("a\x00b\x00", repairs)) == "ab"
    assert stored("json", values.json_text('{"k\\u0000": "v\\u0000"}', repairs)) == {"k": "v"}
    assert stored("json", values.json_value({"x": ["\x00"]}, repairs)) == {"x": [""]}
    assert repairs.count == 3


# -- property-based: whatever the input, accepted => stored unchanged ---------------------------

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(st.text())
def test_any_text_is_stored_as_the_layer_says(stored, text):
    try:
        copy_text = values.text(text)
    except InvalidValue:
        assert any("\ud800" <= c <= "\udfff" for c in text)
        return
    assert stored("text", copy_text) == text.replace("\x00", "")


@SETTINGS
@given(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(alphabet="0123456789+-_ ٣５", max_size=12),
        st.integers(min_value=-(2**70), max_value=2**70),
    )
)
def test_any_integer_is_stored_as_the_layer_says(stored, value):
    try:
        copy_text = values.bigint(value)
    except InvalidValue:
        return
    assert stored("bigint", copy_text) == int(value)


@SETTINGS
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(allow_nan=False).map(repr),
        st.text(alphabet="0123456789.eE+-_ni", max_size=10),
    )
)
def test_any_double_is_stored_as_the_layer_says(stored, value):
    try:
        copy_text = values.double(value)
    except InvalidValue:
        return
    held = stored("double", copy_text)
    assert held == float(value) and math.isfinite(held)


_DIGIT = st.sampled_from("0123456789")
_TIMESTAMP_LIKE = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    st.sampled_from(["2022", "0000", "9999", "1970"]),
    st.sampled_from(["01", "02", "12", "13", "00"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32"]),
    st.sampled_from([" ", "T", "t", "_"]),
    st.sampled_from(["00", "23", "24"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["", ".5", ".123456", ".1234567", ",5"]),
    st.sampled_from(["", "Z", "+03:00", "-0130", "+14", "+15:00", "+99"]),
)


@SETTINGS
@given(_TIMESTAMP_LIKE)
def test_any_timestamp_is_stored_as_the_layer_says(stored, value):
    try:
        copy_text = values.timestamp(value)
    except InvalidValue:
        return
    held = stored("timestamp", copy_text)
    expected = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if expected.tzinfo is not None:
        expected = expected.astimezone(UTC).replace(tzinfo=None)
    assert held == expected


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(_JSON)
def test_any_json_is_stored_as_the_layer_says(stored, value):
    try:
        copy_text = values.json_value(value)
    except InvalidValue:
        return
    assert _same_json(stored("json", copy_text), _without_nul(value))


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _same_json(held, written) -> bool:
    """Equal as JSON: a float written is the same number if it reads back as the same double
    (jsonb keeps numbers as numeric: 3.602879701896397e16 is held as 36028797018963970)."""
    if isinstance(written, float) and not isinstance(held, bool):
        return isinstance(held, int | float) and float(held) == written
    if isinstance(written, list):
        return (
            isinstance(held, list)
            and len(held) == len(written)
            and all(_same_json(h, w) for h, w in zip(held, written, strict=True))
        )
    if isinstance(written, dict):
        return (
            isinstance(held, dict)
            and held.keys() == written.keys()
            and all(_same_json(held[k], w) for k, w in written.items())
        )
    return held == written and type(held) is type(written)
