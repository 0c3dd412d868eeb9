"""Row models per table: ISO 8601 timestamps only, integer ranges, errors naming the field."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from dwh_helper.dwh.models import ROW_MODELS
from dwh_helper.dwh.tables import DWH_TABLES

pytestmark = pytest.mark.unit

U = "54050f2a-63b7-11ed-ae7f-79799fc6c6bf"


def test_a_model_per_table_with_its_columns():
    assert set(ROW_MODELS) == set(DWH_TABLES)
    for name, model in ROW_MODELS.items():
        assert set(model.model_fields) == set(DWH_TABLES[name].column_names)


@pytest.mark.parametrize(
    "value", ["2024-03-02T00:57:33", "2024-03-02 00:57:33.008000", "2024-03-02T03:57:33+03:00"]
)
def test_event_time_accepts_iso_8601(value):
    row = ROW_MODELS["events_part"](uuid=U, event_time=value)
    assert row.event_time == datetime(2024, 3, 2, 0, 57, 33, row.event_time.microsecond)


@pytest.mark.parametrize("value", ["02.03.2024 00:57", "yesterday", 1709341053, ""])
def test_event_time_refuses_anything_else_naming_the_field(value):
    with pytest.raises(ValidationError) as error:
        ROW_MODELS["events_part"](uuid=U, event_time=value)
    assert error.value.errors()[0]["loc"] == ("event_time",)


def test_integer_ranges_and_required_columns():
    with pytest.raises(ValidationError) as error:
        ROW_MODELS["changeable_user_properties"](
            uuid=U, event_time="2024-03-02T00:00:00", age=2**31
        )
    assert error.value.errors()[0]["loc"] == ("age",)
    with pytest.raises(ValidationError) as error:
        ROW_MODELS["permanent_user_properties"](ehr_id=1)
    assert error.value.errors()[0]["loc"] == ("first_login_at",)
    with pytest.raises(ValidationError):
        ROW_MODELS["mobile_devices"](device_id="d", colour="red")
