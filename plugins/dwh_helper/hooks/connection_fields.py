"""Reading Airflow connections with errors that say exactly what to set."""

from __future__ import annotations

from typing import Any


class ConnectionMissing(ValueError):
    """An Airflow connection, or one of its fields, is not set; the message says how to set it."""


def get_connection(hook: Any, conn_id: str, example: str) -> Any:
    """The connection `conn_id`, or ConnectionMissing naming the AIRFLOW_CONN_ variable to set."""
    from airflow.exceptions import AirflowNotFoundException

    try:
        return hook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionMissing(missing_message(conn_id, example)) from None


def missing_message(conn_id: str, example: str) -> str:
    """What to run to create the missing connection `conn_id` (`example`: its JSON form)."""
    return (
        f"Airflow connection {conn_id!r} is not defined: create it with "
        f"`airflow connections add {conn_id} --conn-json '{example}'` (or in the UI), or set "
        f"AIRFLOW_CONN_{conn_id.upper()}='{example}' in the environment of every Airflow "
        "process (docker compose passes it from .env)"
    )


CONNECTION_EXAMPLES: dict[str, str] = {
    "dwh_postgres": (
        '{"conn_type": "postgres", "host": "dwh-postgres", "port": 5432, "login": "dwh", '
        '"password": "change-me", "schema": "dwh"}'
    ),
    "aws_default": (
        '{"conn_type": "aws", "login": "<access key>", "password": "<secret key>", '
        '"extra": {"endpoint_url": "http://minio:9000", "region_name": "us-east-1"}}'
    ),
    "amplitude_web": (
        '{"conn_type": "amplitude", "login": "<api key>", "password": "<secret key>", '
        '"extra": {"region": "us"}}'
    ),
    "amplitude_mobile": (
        '{"conn_type": "amplitude", "login": "<api key>", "password": "<secret key>", '
        '"extra": {"region": "us"}}'
    ),
    "appmetrica_default": (
        '{"conn_type": "appmetrica", "password": "<oauth token>", '
        '"extra": {"application_ids": "1111"}}'
    ),
}
"""The JSON form of each connection the DAGs use (placeholders for secrets)."""


def require_connections(conn_ids: list[str]) -> None:
    """ConnectionMissing (naming how to create them) for every connection that is not defined."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    missing = []
    for conn_id in conn_ids:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            missing.append(missing_message(conn_id, CONNECTION_EXAMPLES.get(conn_id, "{...}")))
    if missing:
        raise ConnectionMissing("; ".join(missing))


def require(value: str | None, conn_id: str, field: str, meaning: str) -> str:
    """A connection field's value, or ConnectionMissing naming the field."""
    if not value:
        raise ConnectionMissing(f"Airflow connection {conn_id!r} has no {field} ({meaning})")
    return value


def extra_number(extras: dict[str, Any], name: str, conn_id: str) -> float | None:
    """A numeric extra, or None when absent; ConnectionMissing when it is not a number."""
    value = extras.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConnectionMissing(
            f"Airflow connection {conn_id!r}: extra {name!r} must be a number, got {value!r}"
        ) from None
