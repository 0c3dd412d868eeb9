"""The mapping file is validated when loaded, and the shipped file encodes the reference's rules."""

from __future__ import annotations

import copy

import pytest
import yaml

from dwh_helper.transform.field_mapping import (
    DEFAULT_MAPPING_PATH,
    MappingError,
    load_field_mappings,
    parse_field_mappings,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))


def _rule(mapping, section: str, column: str):
    return next(rule for rule in getattr(mapping, section) if rule.column == column)


def test_shipped_mapping_loads_with_every_reference_rule():
    mapping = load_field_mappings()
    assert mapping.ehr_id.keys == ["EHR_ID"]
    assert mapping.ehr_id.null_values == [None, "N/A", "no ehr", "no_ehr", "null", ""]
    assert mapping.null_values == [None, "N/A"]
    assert [rule.column for rule in mapping.permanent] == [
        "gender",
        "cohort_day",
        "cohort_week",
        "cohort_month",
        "registered_via_app",
        "source",
    ]
    gender = _rule(mapping, "permanent", "gender")
    assert (gender.keys, gender.type, gender.lowercase) == (["Gender", "gender"], "string", True)
    via_app = _rule(mapping, "permanent", "registered_via_app")
    assert via_app.true_values == ["via app", "1", 1]
    assert via_app.false_values == ["0", 0]
    assert via_app.null_values == ["unknown", "N/A"]
    age = _rule(mapping, "changeable", "age")
    assert (age.keys, age.type, age.extract_regex) == (["age", "Age"], "integer", r"\d+")
    city = _rule(mapping, "changeable", "app_city")
    assert city.value_map == {"SPB": "Санкт-Петербург", "Moscow": "Москва"}
    push = _rule(mapping, "changeable", "push_permission")
    assert push.keys == ["push_permission", "Notifications state"]
    assert push.true_values == ["granted", "Enabled", 1, "true", "1"]
    assert push.false_values == ["not_granted", "Disabled", 0, "false", "0"]
    location = _rule(mapping, "changeable", "location_permission")
    assert (location.true_values, location.false_values) == (["granted"], ["not_granted"])
    auth = _rule(mapping, "changeable", "authorization_status")
    assert auth.keys == ["authorization_status", "Authorized"]
    assert auth.true_values == ["authorized", "true", "True", "1", 1]
    assert auth.false_values == ["not_authorized", "unauthorized", "false", "False", "0", 0]
    for rule in mapping.rules():
        if rule.type == "boolean":
            assert {"unknown", "N/A"} <= set(rule.null_values), rule.column
    counters = [
        "telemed_files_sent",
        "appointments_cancelled",
        "telemed_files_received",
        "telemed_messages_received",
        "telemed_messages_sent",
        "telemed_consultations_resumed",
        "appointments_booked",
    ]
    for column in counters:
        rule = _rule(mapping, "changeable", column)
        assert (rule.keys, rule.type) == ([column], "integer")
    session = _rule(mapping, "changeable", "session_id")
    assert session.origin == "record" and -1 in session.null_values


def test_yaml_integers_and_strings_stay_distinct(shipped):
    mapping = parse_field_mappings(shipped)
    via_app = _rule(mapping, "permanent", "registered_via_app")
    assert [type(value) for value in via_app.true_values] == [str, str, int]


@pytest.mark.parametrize(
    ("section", "index", "change", "expected"),
    [
        ("permanent", 1, {"type": "date"}, "permanent[1] (column 'cohort_day').type"),
        (
            "permanent",
            0,
            {"column": "gendr"},
            "permanent[0] (column 'gendr'): not a mappable column",
        ),
        ("changeable", 1, {"extract_regex": "(\\d+"}, "changeable[1] (column 'age').extract_regex"),
        ("changeable", 1, {"type": "boolean"}, "a boolean needs true_values"),
        ("permanent", 1, {"type": "string"}, "type 'string' does not fit"),
        (
            "changeable",
            0,
            {"column": "uuid"},
            "not a mappable column of changeable_user_properties",
        ),
        ("changeable", 0, {"colour": "red"}, "changeable[0] (column 'language').colour"),
        ("changeable", 0, {"keys": []}, "changeable[0] (column 'language').keys"),
        ("changeable", 2, {"lowercase": True, "type": "integer"}, "lowercase only applies"),
    ],
)
def test_invalid_entries_are_errors_naming_the_entry(shipped, section, index, change, expected):
    data = copy.deepcopy(shipped)
    data[section][index].update(change)
    with pytest.raises(MappingError) as info:
        parse_field_mappings(data, "custom.yaml")
    assert str(info.value).startswith("custom.yaml: invalid field mapping")
    assert expected in str(info.value)


def test_duplicate_target_column_is_an_error(shipped):
    data = copy.deepcopy(shipped)
    data["permanent"].append({"column": "gender", "keys": ["sex"], "type": "string"})
    with pytest.raises(MappingError, match=r"permanent\[6\].*already mapped by permanent\[0\]"):
        parse_field_mappings(data)


def test_ehr_rule_must_be_an_integer_column(shipped):
    data = copy.deepcopy(shipped)
    data["ehr_id"]["type"] = "string"
    with pytest.raises(MappingError, match="ehr_id: .*must be `column: ehr_id`, `type: integer`"):
        parse_field_mappings(data)


def test_load_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(MappingError, match="nope.yaml: cannot read"):
        load_field_mappings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("permanent: [\n", encoding="utf-8")
    with pytest.raises(MappingError, match="bad.yaml: not valid YAML.*line"):
        load_field_mappings(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n", encoding="utf-8")
    with pytest.raises(MappingError, match="expected a mapping document"):
        load_field_mappings(scalar)


def test_a_custom_file_extends_the_mapping(tmp_path, shipped):
    data = copy.deepcopy(shipped)
    data["ignore_keys"] = ["google_pay_available"]
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    mapping = load_field_mappings(path)
    assert "google_pay_available" in mapping.known_keys()
    assert "Ehr Count" not in mapping.known_keys()
