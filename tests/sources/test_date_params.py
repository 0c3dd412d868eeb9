"""The one parser of date parameters: strict shapes, bounds, errors naming the parameter."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from dwh_helper.sources.date_params import (
    DAY,
    DAY_OR_SECOND,
    HOUR,
    DateParamError,
    parse_moment,
)

pytestmark = pytest.mark.unit


def test_each_shape_parses_to_a_naive_moment():
    assert parse_moment("20240501", "start", formats=DAY) == datetime(2024, 5, 1)
    assert parse_moment("20240501T07", "start", formats=HOUR) == datetime(2024, 5, 1, 7)
    assert parse_moment("2024-05-01", "since", formats=DAY_OR_SECOND) == datetime(2024, 5, 1)
    for text in ("2024-05-01 10:20:30", "2024-05-01T10:20:30"):
        assert parse_moment(text, "since", formats=DAY_OR_SECOND) == datetime(
            2024, 5, 1, 10, 20, 30
        )


def test_a_day_as_an_end_means_its_last_second():
    end = parse_moment("2024-05-01", "until", formats=DAY_OR_SECOND, end_of_day=True)
    assert end == datetime(2024, 5, 1, 23, 59, 59)
    moment = parse_moment("2024-05-01 10:00:00", "until", formats=DAY_OR_SECOND, end_of_day=True)
    assert moment == datetime(2024, 5, 1, 10)


@pytest.mark.parametrize(
    ("value", "formats"),
    [
        ("2024050", DAY),  # strptime alone would read a one-digit day
        ("2024-05-01", DAY),
        ("20241301", DAY),
        ("20240501T7", HOUR),
        ("20240501T24", HOUR),
        ("01.05.2024", DAY_OR_SECOND),
        ("2024-13-01", DAY_OR_SECOND),
        ("2024-05-01 25:00:00", DAY_OR_SECOND),
        ("２０２４0501", DAY),
    ],
)
def test_anything_else_names_the_parameter_and_the_shapes(value, formats):
    with pytest.raises(DateParamError) as caught:
        parse_moment(value, "start", formats=formats)
    assert caught.value.name == "start"
    assert str(caught.value).startswith(f"start={value!r}: use {formats[0]}")


def test_bounds_are_inclusive_and_said():
    bounds = {"earliest": date(2010, 1, 1), "latest": date(2024, 5, 1)}
    assert parse_moment("20100101", "start", formats=DAY, **bounds) == datetime(2010, 1, 1)
    assert parse_moment("20240501", "start", formats=DAY, **bounds) == datetime(2024, 5, 1)
    for value in ("20091231", "20240502"):
        with pytest.raises(DateParamError, match="between 2010-01-01 and 2024-05-01"):
            parse_moment(value, "start", formats=DAY, **bounds)
