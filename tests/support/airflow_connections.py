"""Airflow connections of the test sandboxes, as the `AIRFLOW_CONN_*` variables Airflow reads."""

from __future__ import annotations

import json

import psycopg
import pytest

from devtools.sandbox.amplitude import AmplitudeSandbox


def amplitude_connections(sandbox: AmplitudeSandbox) -> dict[str, str]:
    """`AIRFLOW_CONN_AMPLITUDE_<PROJECT>` of each sandbox project (its URL, keys and id)."""
    return {
        f"AIRFLOW_CONN_AMPLITUDE_{project.name.upper()}": json.dumps(
            {
                "conn_type": "amplitude",
                "host": sandbox.url,
                "login": project.api_key,
                "password": project.secret_key,
                "extra": {"project_id": project.project_id},
            }
        )
        for project in sandbox.projects
    }


def use_amplitude_sandbox(monkeypatch: pytest.MonkeyPatch, sandbox: AmplitudeSandbox) -> None:
    """Point this test's Airflow connections `amplitude_<project>` at the sandbox."""
    for name, value in amplitude_connections(sandbox).items():
        monkeypatch.setenv(name, value)


def postgres_connection(dsn: str) -> str:
    """A libpq DSN as the JSON value of an `AIRFLOW_CONN_*` variable of a postgres connection."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host", "127.0.0.1"),
            "port": int(params.get("port", 5432)),
            "login": params.get("user", "postgres"),
            "password": params.get("password") or None,
            "schema": params["dbname"],
        }
    )
