"""AmplitudeHook: an Airflow connection (`amplitude_web`, `amplitude_mobile`) → AmplitudeClient."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from dwh_helper.hooks.connection_fields import extra_number, get_connection, require
from dwh_helper.sources.amplitude import AmplitudeClient

_EXAMPLE = (
    '{"conn_type": "amplitude", "login": "<API key>", "password": "<secret key>", '
    '"extra": {"region": "us"}}'
)


class AmplitudeHook(BaseHook):
    """One Amplitude project: login = API key, password = secret key.

    Extras read by name: `region` (`us` or `eu`), `project_id` (informational),
    `timeout` (read timeout in seconds). When the connection's host is set, it is
    the base URL (e.g. `http://127.0.0.1:8081` for the sandbox or a proxy).
    """

    conn_name_attr = "amplitude_conn_id"
    default_conn_name = "amplitude_web"
    conn_type = "amplitude"
    hook_name = "Amplitude"

    def __init__(self, amplitude_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.amplitude_conn_id = amplitude_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the connection form for Amplitude."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "login": "API key",
                "password": "Secret key",
                "host": "Base URL (optional, overrides the region)",
            },
            "placeholders": {"extra": '{"region": "us", "project_id": "374182", "timeout": 600}'},
        }

    @cached_property
    def connection(self) -> Any:
        """The Airflow connection (looked up once)."""
        return get_connection(self, self.amplitude_conn_id, _EXAMPLE)

    @property
    def source(self) -> str:
        """The project's name: `web` for `amplitude_web`, else the connection id."""
        return self.amplitude_conn_id.removeprefix("amplitude_")

    def get_client(self, **options: Any) -> AmplitudeClient:
        """An AmplitudeClient for this connection's project."""
        conn = self.connection
        conn_id = self.amplitude_conn_id
        extras = conn.extra_dejson
        kwargs: dict[str, Any] = {
            "project": self.source,
            "region": extras.get("region") or "us",
            "base_url": conn.host or None,
        }
        timeout = extra_number(extras, "timeout", conn_id)
        if timeout is not None:
            kwargs["timeout"] = timeout
        kwargs.update(options)
        return AmplitudeClient(
            require(conn.login, conn_id, "login", "the project's API key"),
            require(conn.password, conn_id, "password", "the project's secret key"),
            **kwargs,
        )

    def get_conn(self) -> AmplitudeClient:
        """Same as `get_client()` (the BaseHook interface)."""
        return self.get_client()
