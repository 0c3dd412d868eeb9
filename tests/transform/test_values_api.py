"""The value layer's strict forms the API uses: typed JSON only, NUL refused not removed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dwh_helper.transform import values
from dwh_helper.transform.values import InvalidValue

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["12", True, 3.5, 1e17, 2**63])
def test_json_integer_refuses_text_booleans_fractions_and_out_of_range(value):
    with pytest.raises(InvalidValue):
        values.json_integer(value, "bigint")


def test_json_integer_takes_a_json_integer_or_a_whole_float_in_range():
    assert values.json_integer(3.0, "integer") == 3
    assert values.json_integer(2**31 - 1, "integer") == 2**31 - 1
    with pytest.raises(InvalidValue, match="out of range for integer"):
        values.json_integer(2**31, "integer")


@pytest.mark.parametrize("value", ["1.5", False, float("nan"), float("inf"), 10**400])
def test_json_double_refuses_text_booleans_and_non_finite(value):
    with pytest.raises(InvalidValue):
        values.json_double(value)


def test_json_double_takes_ints_up_to_the_largest_double():
    assert values.json_double(2**1023) == float(2**1023)
    assert values.json_double(-1.5) == -1.5


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_json_boolean_is_true_or_false_only(value):
    with pytest.raises(InvalidValue, match="JSON boolean"):
        values.json_boolean(value)
    assert values.json_boolean(False) is False


def test_exact_text_refuses_nul_where_clean_text_removes_it():
    assert values.clean_text("a\x00b") == "ab"
    with pytest.raises(InvalidValue, match="NUL"):
        values.exact_text("a\x00b")
    with pytest.raises(InvalidValue, match="Unicode"):
        values.exact_text("\ud800")
    assert values.exact_text("ж") == "ж"


@pytest.mark.parametrize(
    "value", [{"k": "a\x00"}, {"a\x00": 1}, [{"x": float("nan")}], {"x": float("-inf")}]
)
def test_exact_json_refuses_nul_and_non_finite_numbers(value):
    with pytest.raises(InvalidValue):
        values.exact_json(value)


def test_exact_json_returns_the_value_itself_and_keeps_the_depth_limit():
    value = {"k": [1, 2**70, "ж"]}
    assert values.exact_json(value) is value
    deep: object = 1
    for _ in range(values.MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidValue, match="deeper"):
        values.exact_json(deep)


def test_iso_timestamp_value_converts_to_naive_utc_within_years_1_to_9999():
    assert values.iso_timestamp_value("2024-03-02T03:57:33+03:00") == datetime(
        2024, 3, 2, 0, 57, 33
    )
    assert values.iso_timestamp_value("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59)
    for edge in ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]:
        with pytest.raises(InvalidValue, match="years 1-9999"):
            values.iso_timestamp_value(edge)
    with pytest.raises(InvalidValue, match="ISO 8601"):
        values.iso_timestamp_value("02.03.2024 00:57")
    with pytest.raises(InvalidValue, match="ISO 8601"):
        values.iso_timestamp_value(1709341053)


def test_a_datetime_leaving_utc_years_is_invalid_not_an_overflow():
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2)))
    with pytest.raises(InvalidValue, match="years 1-9999"):
        values.timestamp(late)
    assert values.utc_naive(datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 1, 1)
