"""The production-shaped stack of tests/production, started once for the module's scenarios."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devtools.sandbox.amplitude import AmplitudeSandbox
from devtools.sandbox.appmetrica import AppMetricaSandbox
from tests.production.stack import AirflowStack
from tests.support.airflow_connections import postgres_connection

# The sandbox gives ~1 % of events a value the user-properties mapping rejects, so a small
# day can pass the 1 % default; the deployment raises it, as an operator would in `.env`
# (compose passes ETL_* to every Airflow service). The reference runs use the same value.
REJECT_RATIO = "0.05"
DWH_DB = "dwh_production"
METADATA_DB = "airflow_production"
BUCKET = "production-raw"
APPLICATION = "1111"
TOKEN = "production-token"


def source_connections(amplitude: AmplitudeSandbox, appmetrica: AppMetricaSandbox) -> dict:
    """The Amplitude and AppMetrica connections, pointed at the sandboxes."""
    env = {
        "AIRFLOW_CONN_APPMETRICA_DEFAULT": json.dumps(
            {
                "conn_type": "appmetrica",
                "host": appmetrica.url,
                "password": TOKEN,
                "extra": {"application_ids": APPLICATION, "poll_interval": 0.05},
            }
        )
    }
    for project in amplitude.projects:
        env[f"AIRFLOW_CONN_AMPLITUDE_{project.name.upper()}"] = json.dumps(
            {
                "conn_type": "amplitude",
                "host": amplitude.url,
                "login": project.api_key,
                "password": project.secret_key,
                "extra": {"project_id": project.project_id},
            }
        )
    return env


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[tuple[AmplitudeSandbox, AppMetricaSandbox]]:
    """The Amplitude and AppMetrica sandboxes both the stack and the reference runs read."""
    with (
        AmplitudeSandbox(seed=16, events_per_hour=30) as amplitude,
        AppMetricaSandbox(TOKEN, (APPLICATION,), seed=16, events_per_day=400) as appmetrica,
    ):
        yield amplitude, appmetrica


def reset_database(pg_server, name: str) -> str:
    """Drop and re-create database `name` (closing its sessions); returns its DSN."""
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return pg_server.dsn_for(name)


@pytest.fixture(scope="module")
def stack(pg_server, s3_server, sandboxes) -> Iterator[AirflowStack]:
    """api-server, scheduler, dag-processor, triggerer and two Celery workers."""
    amplitude, appmetrica = sandboxes
    metadata_dsn = reset_database(pg_server, METADATA_DB)
    dwh_dsn = reset_database(pg_server, DWH_DB)
    s3_server.create_bucket(BUCKET)
    env = {
        "AIRFLOW_CONN_DWH_POSTGRES": postgres_connection(dwh_dsn),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": s3_server.region},
            }
        ),
        "S3_BUCKET_NAME": BUCKET,
        "ETL_REJECT_RATIO": REJECT_RATIO,
        # The killed load's retry starts seconds after the kill, not the production 2 minutes.
        "ETL_RETRY_DELAY": "2",
        **source_connections(amplitude, appmetrica),
    }
    home = Path(tempfile.mkdtemp(prefix="dwh-production-airflow-"))
    airflow = AirflowStack(home, metadata_dsn, env)
    try:
        airflow.start()
        dag_ids = {"amplitude_events", "appmetrica_events", "user_properties"}
        airflow.wait_until_parsed(dag_ids)
        airflow.unpause_without_schedule(dag_ids)
        yield airflow
    finally:
        airflow.stop()
        pg_server.drop_database(DWH_DB)
        pg_server.drop_database(METADATA_DB)
