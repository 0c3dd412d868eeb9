"""Templated operator arguments: every accepted shape coerces; a bad one fails at once, no retry."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pendulum
import pytest

from dwh_helper.operators.params import (
    MAX_DAYS_PER_RUN,
    as_bool,
    as_day,
    as_int,
    as_list,
    day_range,
    optional_int,
    optional_moment,
    optional_text,
)

pytestmark = pytest.mark.airflow

DAY = date(2024, 3, 2)
TEST_BUNDLE = "tests"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("True", True),
        ("true", True),
        (" yes ", True),
        ("on", True),
        ("1", True),
        ("False", False),
        ("no", False),
        ("off", False),
        ("0", False),
        ("", False),
        ("None", False),
        (None, False),
    ],
)
def test_as_bool_accepts_native_and_rendered_text(value, expected):
    assert as_bool(value, "strict") is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5000, 5000), ("5000", 5000), (" 7 ", 7), (0, 0)],
)
def test_as_int_accepts_int_and_text(value, expected):
    assert as_int(value, "batch_size") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["web", "mobile"], ["web", "mobile"]),
        (("web",), ["web"]),
        ("web, mobile", ["web", "mobile"]),
        ("web", ["web"]),
        ([1111, " 2222 "], ["1111", "2222"]),
        ([], []),
        ("", []),
        ("None", []),
        (None, []),
    ],
)
def test_as_list_accepts_lists_and_comma_separated_text(value, expected):
    assert as_list(value, "sources") == expected


@pytest.mark.parametrize(
    "value",
    [DAY, datetime(2024, 3, 2, 10, tzinfo=UTC), pendulum.datetime(2024, 3, 2), "2024-03-02"],
)
def test_as_day_accepts_dates_datetimes_and_iso_text(value):
    assert as_day(value, "day") == DAY


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-02", DAY),
        (DAY, DAY),
        ("2024-03-02T10:30:00", datetime(2024, 3, 2, 10, 30)),
        ("", None),
        ("None", None),
        (None, None),
    ],
)
def test_optional_moment_is_a_day_a_timestamp_or_unset(value, expected):
    assert optional_moment(value, "since") == expected


def test_unset_values_are_none():
    assert optional_text(" None ") is None and optional_text("null") is None
    assert optional_text(" key ") == "key"
    assert optional_int("", "start_after") is None and optional_int("10", "start_after") == 10


def test_day_range_from_params_or_the_default():
    assert day_range("2024-03-01", "2024-03-03", default=DAY) == [
        date(2024, 3, 1),
        date(2024, 3, 2),
        date(2024, 3, 3),
    ]
    assert day_range("2024-03-01", None, default=DAY) == [date(2024, 3, 1)]
    assert day_range(None, "2024-03-09", default=DAY) == [DAY]
    assert day_range("", "", default=DAY) == [DAY]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: as_bool("maybe", "strict"), r"strict must be true or false, got 'maybe'"),
        (lambda: as_bool(2, "strict"), r"strict must be true or false, got 2"),
        (lambda: as_int("many", "batch_size"), r"batch_size must be an integer, got 'many'"),
        (lambda: as_int(True, "batch_size"), r"batch_size must be an integer"),
        (lambda: as_int("0", "batch_size", minimum=1), r"batch_size must be an integer of at le"),
        (lambda: as_list({"a": 1}, "keys"), r"keys must be a list or comma-separated text"),
        (
            lambda: as_list("events,clicks", "resources", choices=("events",)),
            r"resources must be a list of events, got \['clicks'\]",
        ),
        (lambda: as_day("2024-02-30", "day"), r"day must be a date \(YYYY-MM-DD\)"),
        (lambda: as_day(None, "day"), r"day must be a date"),
        (lambda: optional_moment("yesterday", "since"), r"since must be a date .* or an ISO"),
        (lambda: day_range("2024-03-05", "2024-03-01", default=DAY), r"end .* is before start"),
        (
            lambda: day_range("2023-01-01", "2024-12-31", default=DAY),
            rf"at most {MAX_DAYS_PER_RUN}",
        ),
        (lambda: day_range("03/01/2024", None, default=DAY), r"params: start must be a date"),
    ],
)
def test_a_bad_value_fails_without_retry_naming_the_argument(call, message):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=message):
        call()


def _serialized(dag):  # noqa: ANN001, ANN202 - the DAG, now known to the metadata DB
    """Write a DAG built in a test to the metadata DB, as the DAG processor would a file's.

    It goes to a bundle of its own (`tests`): `dag.test()` re-parses the DAG's bundle, and
    the dags folder does not hold this DAG.
    """
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagbundle import DagBundleModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, TEST_BUNDLE) is None:
            session.add(DagBundleModel(name=TEST_BUNDLE))
    errors: dict = {}
    with create_session() as session:
        update_dag_parsing_results_in_db(
            TEST_BUNDLE, None, [LazyDeserializedDAG.from_dag(dag)], errors, None, set(), session
        )
    assert errors == {}
    assert DagVersion.get_latest_version(dag.dag_id) is not None
    return dag


def _bad_params_dag(native: bool):
    """Every operator, each fed one bad templated argument (retries as in the real DAGs)."""
    from airflow.sdk import DAG, Param

    from dwh_helper.operators.amplitude import AmplitudeToS3Operator
    from dwh_helper.operators.appmetrica import AppMetricaToS3Operator
    from dwh_helper.operators.load import S3ToDwhOperator
    from dwh_helper.operators.schedule import DEFAULT_ARGS
    from dwh_helper.operators.user_properties import MigrateUserPropertiesOperator

    with DAG(
        f"bad_params_{'native' if native else 'text'}",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=native,
        default_args=DEFAULT_ARGS,
        params={
            "day": Param("2024-02-30", type="string"),
            "application_id": Param("app", type="string"),
            "source": Param("amplitud", type="string"),
            "batch_size": Param("many", type="string"),
            "reload": Param("maybe", type="string"),
        },
    ) as dag:
        AmplitudeToS3Operator(task_id="amplitude_day", source="web", day="{{ params.day }}")
        AmplitudeToS3Operator(
            task_id="amplitude_reload",
            source="web",
            day="2024-03-02",
            reload_from_s3="{{ params.reload }}",
        )
        AppMetricaToS3Operator(
            task_id="appmetrica_app", application_id="{{ params.application_id }}", day="2024-03-02"
        )
        S3ToDwhOperator(task_id="load_source", keys=["raw/x.zip"], source="{{ params.source }}")
        MigrateUserPropertiesOperator(
            task_id="user_properties_batch", batch_size="{{ params.batch_size }}"
        )
    return _serialized(dag)


@pytest.mark.parametrize("native", [True, False])
def test_dag_test_a_bad_param_fails_each_operator_at_once(airflow_env, native):
    dag = _bad_params_dag(native)
    run = dag.test(logical_date=datetime(2024, 3, 3, tzinfo=UTC))
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states == {task_id: ("failed", 1) for task_id in dag.task_ids}  # retries=3: none used


def _shapes_dag(native: bool, bucket: str):
    """The extract operators in re-load mode, fed each templated value as the DAG renders it."""
    from airflow.sdk import DAG, Param

    from dwh_helper.operators.amplitude import AmplitudeToS3Operator
    from dwh_helper.operators.appmetrica import AppMetricaToS3Operator

    with DAG(
        f"param_shapes_{'native' if native else 'text'}",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=native,
        params={
            "reload_bool": Param(True, type="boolean"),
            "reload_text": Param("yes", type="string"),
            "application_id": Param(1111, type="integer"),
            "day": Param("2024-03-02", type="string", format="date"),
            "fields": Param(["event_name"], type="array"),
        },
    ) as dag:
        AmplitudeToS3Operator(
            task_id="amplitude_bool",
            source="web",
            day="{{ params.day }}",
            reload_from_s3="{{ params.reload_bool }}",
        )
        AmplitudeToS3Operator(
            task_id="amplitude_text",
            source="web",
            day="{{ data_interval_start }}",
            reload_from_s3="{{ params.reload_text }}",
        )
        AppMetricaToS3Operator(
            task_id="appmetrica_int_app",
            application_id="{{ params.application_id }}",
            resource="events",
            day="{{ params.day }}",
            fields="{{ params.fields }}",
            reload_from_s3="{{ params.reload_bool }}",
            bucket=bucket,
        )
    return _serialized(dag)


@pytest.mark.db
@pytest.mark.s3
@pytest.mark.parametrize("native", [True, False])
def test_dag_test_every_templated_shape_coerces(airflow_env, store, native):
    from dwh_helper.pipeline.amplitude import day_prefix as amplitude_prefix
    from dwh_helper.pipeline.appmetrica import raw_key

    amplitude_key = f"{amplitude_prefix('web', DAY)}web_20240302.zip"
    appmetrica_key = raw_key(1111, "events", DAY)
    for key in (amplitude_key, appmetrica_key):
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"x")
    dag = _shapes_dag(native, store.bucket)
    run = dag.test(logical_date=datetime(2024, 3, 2, tzinfo=UTC))
    assert str(run.state) == "success"
    pulled = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}
    assert pulled == {
        "amplitude_bool": [amplitude_key],
        "amplitude_text": [amplitude_key],
        "appmetrica_int_app": [appmetrica_key],
    }
