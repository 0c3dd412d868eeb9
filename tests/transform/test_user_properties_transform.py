"""transform_record applies every rule of the reference, value by value."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from dwh_helper.transform.field_mapping import DEFAULT_MAPPING_PATH, parse_field_mappings
from dwh_helper.transform.user_properties import (
    FieldError,
    complete_record,
    transform_properties,
    transform_record,
)

pytestmark = pytest.mark.unit

UUID = uuid.UUID("54050f2a-63b7-11ed-ae7f-79799fc6c6bf")
WHEN = datetime(2024, 3, 2, 0, 57, 33, 8000)


def tmp_row(props: dict | None, **fields) -> dict:
    """A tmp_user_properties row as the pipeline reads it."""
    row = {
        "uuid": UUID,
        "user_properties_json": props,
        "language": "Russian",
        "session_id": 1709341053000,
        "start_version": "5.1.0",
        "event_time": WHEN,
    }
    row.update(fields)
    return row


def changeable_value(props: dict, column: str):
    result = transform_record(tmp_row({"EHR_ID": "7", **props}))
    assert result.errors == []
    return result.changeable[column]


def permanent_value(props: dict, column: str):
    result = transform_record(tmp_row({"EHR_ID": "7", **props}))
    assert result.errors == []
    return result.permanent[column]


def error_of(props: dict) -> FieldError:
    """The one invalid value of a non-key column: stored NULL, the record kept, the value
    reported (on_invalid: null, the default for every column but ehr_id)."""
    result = transform_record(tmp_row({"EHR_ID": "7", **props}))
    assert result.errors == [] and result.changeable is not None
    assert len(result.reports) == 1, result.reports
    report = result.reports[0]
    row = result.permanent if report.table == "permanent_user_properties" else result.changeable
    assert row[report.column] is None
    return report


def test_raw_amplitude_event_maps_to_both_rows():
    event = {
        "uuid": str(UUID),
        "event_time": "2024-03-02 00:57:33.008000",
        "language": "Russian",
        "session_id": 1709341053000,
        "start_version": "5.1.0",
        "user_id": "155683",
        "user_properties": {
            "EHR_ID": "155683",
            "Gender": "Female",
            "Age": "34 года",
            "Notifications state": "Enabled",
            "app_city": "SPB",
            "cohort_day": 12,
        },
    }
    result = transform_record(event)
    assert result.errors == [] and result.unknown_keys == []
    assert result.permanent == {
        "ehr_id": 155683,
        "first_login_at": WHEN,
        "gender": "female",
        "cohort_day": 12,
        "cohort_week": None,
        "cohort_month": None,
        "registered_via_app": None,
        "source": None,
    }
    assert result.changeable == {
        "uuid": UUID,
        "ehr_id": 155683,
        "event_time": WHEN,
        "language": "Russian",
        "age": 34,
        "app_city": "Санкт-Петербург",
        "push_permission": True,
        "location_permission": None,
        "authorization_status": None,
        "telemed_files_sent": None,
        "appointments_cancelled": None,
        "telemed_files_received": None,
        "telemed_messages_received": None,
        "telemed_messages_sent": None,
        "telemed_consultations_resumed": None,
        "appointments_booked": None,
        "session_id": 1709341053000,
        "start_version": "5.1.0",
    }


def test_tmp_row_with_json_text_properties():
    result = transform_record(tmp_row('{"EHR_ID": 42, "source": "ads"}'))
    assert result.permanent["ehr_id"] == 42 and result.permanent["source"] == "ads"


@pytest.mark.parametrize("value", [None, "N/A", "no ehr", "no_ehr", "null", ""])
def test_ehr_id_null_forms_give_no_permanent_row(value):
    result = transform_record(tmp_row({"EHR_ID": value, "Gender": "Male", "age": 30}))
    assert result.errors == []
    assert result.permanent is None
    assert result.changeable["ehr_id"] is None
    assert result.changeable["age"] == 30


def test_missing_ehr_id_and_missing_properties_still_give_a_changeable_row():
    assert transform_record(tmp_row({})).changeable["ehr_id"] is None
    result = transform_record(tmp_row(None))
    assert result.permanent is None and result.changeable["uuid"] == UUID


@pytest.mark.parametrize(("value", "expected"), [("155683", 155683), (155683, 155683), ("+12", 12)])
def test_ehr_id_forms(value, expected):
    result = transform_record(tmp_row({"EHR_ID": value}))
    assert result.permanent["ehr_id"] == expected == result.changeable["ehr_id"]


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "12a",
        True,
        {"id": 1},
        "99999999999999999999",
        " 12",
        "12 ",
        "５０９０７１",
        "1_000",
        "84141a73-5ed4-4a0c-9c1d-4c2f6f5b2b11",
        1.5,
        float("inf"),
    ],
)
def test_bad_ehr_id_rejects_the_record(value):
    result = transform_record(tmp_row({"EHR_ID": value}))
    assert result.permanent is None and result.changeable is None
    assert [(error.key, error.value) for error in result.errors] == [("EHR_ID", value)]
    assert result.errors[0].reason.startswith("ehr_id: ")


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"Gender": "Female"}, "female"),
        ({"gender": "MALE"}, "male"),
        ({"Gender": "Female", "gender": "male"}, "female"),
        ({"Gender": None, "gender": "Male"}, "male"),
        ({"Gender": "N/A", "gender": "Male"}, "male"),
        ({"Gender": "N/A"}, None),
        ({}, None),
    ],
)
def test_gender_first_non_null_lowercased(props, expected):
    assert permanent_value(props, "gender") == expected


@pytest.mark.parametrize("column", ["cohort_day", "cohort_week", "cohort_month"])
@pytest.mark.parametrize(("value", "expected"), [(12, 12), ("12", 12), (12.0, 12), ("N/A", None)])
def test_cohorts_are_integers(column, value, expected):
    assert permanent_value({column: value}, column) == expected


@pytest.mark.parametrize("value", ["12 days", 1.5, True, [1]])
def test_cohort_non_integer_is_an_error(value):
    error = error_of({"cohort_week": value})
    assert (error.key, error.value) == ("cohort_week", value)
    assert error.reason.startswith("cohort_week: ")


def test_integer_out_of_range_for_the_column_is_an_error():
    error = error_of({"cohort_day": 2**31})
    assert "out of range for integer" in error.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("via app", True),
        ("1", True),
        (1, True),
        (True, True),
        ("0", False),
        (0, False),
        (False, False),
        ("unknown", None),
        ("N/A", None),
        (None, None),
    ],
)
def test_registered_via_app_table(value, expected):
    assert permanent_value({"registered_via_app": value}, "registered_via_app") is expected


@pytest.mark.parametrize("value", ["yes", "Via App", 2, 1.0, "true"])
def test_registered_via_app_unknown_value_is_an_error(value):
    error = error_of({"registered_via_app": value})
    assert error.key == "registered_via_app" and "not a known boolean value" in error.reason


def test_source_is_a_string():
    assert permanent_value({"source": "Google Ads"}, "source") == "Google Ads"
    assert permanent_value({"source": 7}, "source") == "7"


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"age": 25}, 25),
        ({"age": "25 лет"}, 25),
        ({"Age": "34 года"}, 34),
        ({"age": "25"}, 25),
        ({"age": "N/A", "Age": "40"}, 40),
        ({"age": "25", "Age": "40"}, 25),
        ({"Age": None}, None),
    ],
)
def test_age_first_run_of_digits(props, expected):
    assert changeable_value(props, "age") == expected


def test_age_without_digits_is_an_error():
    error = error_of({"age": "unknown age"})
    assert (error.key, error.value) == ("age", "unknown age")
    assert "no match for extract_regex" in error.reason


@pytest.mark.parametrize(
    ("value", "expected"), [("SPB", "Санкт-Петербург"), ("Moscow", "Москва"), ("Kazan", "Kazan")]
)
def test_app_city_value_map(value, expected):
    assert changeable_value({"app_city": value}, "app_city") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("granted", True),
        ("Enabled", True),
        (1, True),
        ("true", True),
        ("1", True),
        (True, True),
        ("not_granted", False),
        ("Disabled", False),
        (0, False),
        ("false", False),
        ("0", False),
        (False, False),
        ("unknown", None),
        ("N/A", None),
    ],
)
@pytest.mark.parametrize("key", ["push_permission", "Notifications state"])
def test_push_permission_table(key, value, expected):
    assert changeable_value({key: value}, "push_permission") is expected


def test_push_permission_first_key_wins_and_unknown_falls_through():
    props = {"push_permission": "granted", "Notifications state": "Disabled"}
    assert changeable_value(props, "push_permission") is True
    props = {"push_permission": "unknown", "Notifications state": "Disabled"}
    assert changeable_value(props, "push_permission") is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("granted", True),
        ("not_granted", False),
        (True, True),
        (False, False),
        ("unknown", None),
        ("N/A", None),
    ],
)
def test_location_permission_table(value, expected):
    assert changeable_value({"location_permission": value}, "location_permission") is expected


@pytest.mark.parametrize("value", ["Enabled", 1, "1"])
def test_location_permission_accepts_only_its_table(value):
    assert "not a known boolean value" in error_of({"location_permission": value}).reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("authorized", True),
        ("true", True),
        ("True", True),
        ("1", True),
        (1, True),
        (True, True),
        ("not_authorized", False),
        ("unauthorized", False),
        ("false", False),
        ("False", False),
        ("0", False),
        (0, False),
        (False, False),
        ("unknown", None),
        ("N/A", None),
    ],
)
@pytest.mark.parametrize("key", ["authorization_status", "Authorized"])
def test_authorization_status_table(key, value, expected):
    assert changeable_value({key: value}, "authorization_status") is expected


@pytest.mark.parametrize(
    "column",
    [
        "telemed_files_sent",
        "appointments_cancelled",
        "telemed_files_received",
        "telemed_messages_received",
        "telemed_messages_sent",
        "telemed_consultations_resumed",
        "appointments_booked",
    ],
)
def test_counters_are_integers(column):
    assert changeable_value({column: 3}, column) == 3
    assert changeable_value({column: "4"}, column) == 4
    assert changeable_value({column: "N/A"}, column) is None
    error = error_of({column: "three"})
    assert (error.key, error.value) == (column, "three")


@pytest.mark.parametrize(
    ("session", "expected"), [(-1, None), (None, None), (1709341053000, 1709341053000)]
)
def test_session_minus_one_is_null(session, expected):
    result = transform_record(tmp_row({}, session_id=session))
    assert result.changeable["session_id"] == expected


def test_language_and_start_version_come_from_the_record():
    result = transform_record(
        tmp_row({"language": "German"}, language="English", start_version="6")
    )
    assert result.changeable["language"] == "English"
    assert result.changeable["start_version"] == "6"
    assert result.unknown_keys == ["language"]


def test_first_login_at_is_the_event_time_in_utc():
    aware = datetime(2024, 3, 2, 3, 57, 33, tzinfo=timezone(timedelta(hours=3)))
    result = transform_record(tmp_row({"EHR_ID": 1}, event_time=aware))
    assert result.permanent["first_login_at"] == datetime(2024, 3, 2, 0, 57, 33)
    result = transform_record(tmp_row({"EHR_ID": 1}, event_time="2024-03-02T00:57:33Z"))
    assert result.changeable["event_time"] == datetime(2024, 3, 2, 0, 57, 33)
    assert result.changeable["event_time"].tzinfo is None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("event_time", None, "event_time: missing"),
        ("event_time", "yesterday", "not a timestamp"),
        ("uuid", "not-a-uuid", "uuid: not a uuid"),
        ("uuid", None, "uuid: missing"),
    ],
)
def test_record_fields_errors(field, value, reason):
    result = transform_record(tmp_row({"EHR_ID": 1}, **{field: value}))
    assert result.changeable is None
    assert result.errors[0].key == field and reason in result.errors[0].reason


def test_properties_that_are_not_an_object_are_an_error():
    result = transform_record(tmp_row("[1, 2]"))
    assert result.errors[0].key == "user_properties_json"
    assert "expected a JSON object, got a JSON array" in result.errors[0].reason
    result = transform_record(tmp_row("{broken"))
    assert "not valid JSON" in result.errors[0].reason


def test_several_invalid_values_are_all_reported():
    result = transform_record(tmp_row({"EHR_ID": "7", "age": "old", "cohort_day": "x"}))
    assert result.errors == []
    assert sorted((r.key, r.table, r.column) for r in result.reports) == [
        ("age", "changeable_user_properties", "age"),
        ("cohort_day", "permanent_user_properties", "cohort_day"),
    ]
    assert result.changeable["age"] is None and result.permanent["cohort_day"] is None


def test_several_errors_of_rejecting_columns_are_all_reported():
    result = transform_record(tmp_row({"EHR_ID": "x"}, uuid="nope", event_time="2022-W46-1"))
    assert sorted(error.key for error in result.errors) == ["EHR_ID", "event_time", "uuid"]


def test_nul_is_removed_from_text_and_counted():
    result = transform_record(
        tmp_row({"EHR_ID": "7", "source": "a\x00b", "Gender": "Fe\x00male\x00"}, language="R\x00u")
    )
    assert result.errors == [] and result.reports == []
    assert result.permanent["source"] == "ab" and result.permanent["gender"] == "female"
    assert result.changeable["language"] == "Ru"
    assert result.repairs == 3


def test_nul_repair_counts_survive_shared_properties():
    shared = transform_properties({"EHR_ID": "7", "source": "a\x00b"})
    first = complete_record(tmp_row(None), shared)
    second = complete_record(tmp_row(None, uuid=uuid.UUID(int=2), language="x\x00"), shared)
    assert (first.repairs, second.repairs) == (1, 2)


@pytest.mark.parametrize(
    "value",
    ["2022-W46-1", "2022-11-14 00:57:32,668", "2022-11-14T00", "2022-11-14", "2024-02-30 00:00:00"],
)
def test_event_time_forms_postgresql_refuses_reject_the_record(value):
    result = transform_record(tmp_row({"EHR_ID": 1}, event_time=value))
    assert result.changeable is None
    assert [(e.key, e.column) for e in result.errors] == [("event_time", "event_time")]
    assert "not a" in result.errors[0].reason


@pytest.mark.parametrize(
    ("column", "value"),
    [("age", "５０"), ("cohort_day", "５"), ("cohort_day", " 12"), ("telemed_files_sent", "1_0")],
)
def test_integers_take_ascii_digits_only(column, value):
    report = error_of({column: value})
    assert report.column == column and "not an integer" in report.reason


def test_on_invalid_reject_in_the_mapping_rejects_the_record():
    data = copy.deepcopy(yaml.safe_load(DEFAULT_MAPPING_PATH.read_text(encoding="utf-8")))
    data["changeable"][1]["on_invalid"] = "reject"  # age
    data["ehr_id"]["on_invalid"] = None  # YAML `on_invalid: null`
    mapping = parse_field_mappings(data)
    result = transform_record(tmp_row({"EHR_ID": "x", "age": "old"}), mapping)
    assert result.changeable is None
    assert [(e.key, e.column) for e in result.errors] == [("age", "age")]


def test_unknown_keys_are_reported_not_errors():
    result = transform_record(
        tmp_row({"EHR_ID": "7", "Ehr Count": 2, "google_pay_available": True, "age": 3})
    )
    assert result.errors == []
    assert result.unknown_keys == ["Ehr Count", "google_pay_available"]
    assert result.changeable["age"] == 3


def test_strict_mode_makes_unknown_keys_errors():
    result = transform_record(tmp_row({"EHR_ID": "7", "Ehr Count": 2}), strict=True)
    assert result.permanent is None and result.changeable is None
    assert result.errors == [
        FieldError("Ehr Count", 2, "key is not in the field mapping (strict mode)")
    ]
    assert result.unknown_keys == ["Ehr Count"]
    assert transform_record(tmp_row({"EHR_ID": "7"}), strict=True).errors == []


def test_ignored_keys_are_not_unknown():
    data = yaml.safe_load(DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    data["ignore_keys"] = ["Ehr Count"]
    mapping = parse_field_mappings(data)
    result = transform_record(tmp_row({"Ehr Count": 2, "other": 1}), mapping)
    assert result.unknown_keys == ["other"]


def test_error_as_dict_is_json_ready():
    error = FieldError("age", "old", "age: no match")
    assert error.as_dict() == {"key": "age", "value": "old", "reason": "age: no match"}
    assert FieldError("t", WHEN, "x").as_dict()["value"].startswith("datetime.datetime")


def test_properties_converted_once_serve_many_records():
    props = {"EHR_ID": "7", "Gender": "Male", "age": "40", "Ehr Count": 1}
    shared = transform_properties(json.dumps(props), key="user_properties_json")
    first = complete_record(tmp_row(None, session_id=-1), shared)
    second = complete_record(tmp_row(None, uuid=uuid.UUID(int=2), language="English"), shared)
    assert first == transform_record(tmp_row(props, session_id=-1))
    assert second == transform_record(tmp_row(props, uuid=uuid.UUID(int=2), language="English"))
    assert (first.changeable["language"], second.changeable["language"]) == ("Russian", "English")
    assert shared.changeable["uuid"] is None and shared.changeable["language"] is None
    bad = transform_properties({"EHR_ID": "x"})
    assert complete_record(tmp_row(None), bad).errors == list(bad.errors)
    nulled = transform_properties({"EHR_ID": "7", "age": "old"})
    assert complete_record(tmp_row(None), nulled).reports == list(nulled.reports)
