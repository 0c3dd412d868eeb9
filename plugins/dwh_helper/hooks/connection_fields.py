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
        raise ConnectionMissing(
            f"Airflow connection {conn_id!r} is not defined: create it in the UI or set "
            f"AIRFLOW_CONN_{conn_id.upper()}='{example}'"
        ) from None


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
