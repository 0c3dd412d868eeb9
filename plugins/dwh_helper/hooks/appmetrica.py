"""AppMetricaHook: the Airflow connection `appmetrica_default` → AppMetricaClient."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from dwh_helper.hooks.connection_fields import (
    ConnectionMissing,
    extra_number,
    get_connection,
    require,
)
from dwh_helper.sources.appmetrica import DEFAULT_BASE_URL, AppMetricaClient

_EXAMPLE = (
    '{"conn_type": "appmetrica", "password": "<OAuth token>", '
    '"extra": {"application_ids": "1111,2222"}}'
)


def application_ids_of(value: Any, conn_id: str) -> list[str]:
    """Application ids from a comma-separated string or a list; each must be numeric."""
    if value in (None, ""):
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    ids = [str(item).strip() for item in items if str(item).strip()]
    bad = [item for item in ids if not item.isdigit()]
    if bad:
        raise ConnectionMissing(
            f"Airflow connection {conn_id!r}: extra 'application_ids' must list numeric "
            f'AppMetrica application ids (e.g. "1111,2222"), got {bad}'
        )
    return ids


class AppMetricaHook(BaseHook):
    """The AppMetrica Logs API: password = OAuth token.

    Extras read by name: `application_ids` (comma-separated or a list: the applications
    the DAG exports by default), `poll_interval` and `poll_timeout` (seconds between two
    polls of a file being prepared, and the overall deadline). When the connection's host
    is set it is the base URL (a full URL such as `http://127.0.0.1:8082` for the sandbox).
    """

    conn_name_attr = "appmetrica_conn_id"
    default_conn_name = "appmetrica_default"
    conn_type = "appmetrica"
    hook_name = "AppMetrica"

    def __init__(self, appmetrica_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.appmetrica_conn_id = appmetrica_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the connection form for AppMetrica."""
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {
                "password": "OAuth token",
                "host": "Base URL (optional, default https://api.appmetrica.yandex.ru)",
            },
            "placeholders": {
                "extra": '{"application_ids": "1111,2222", "poll_interval": 10, '
                '"poll_timeout": 1800}'
            },
        }

    @cached_property
    def connection(self) -> Any:
        """The Airflow connection (looked up once)."""
        return get_connection(self, self.appmetrica_conn_id, _EXAMPLE)

    @property
    def base_url(self) -> str:
        """The host as a base URL (`https://` added when it has no scheme), else the default."""
        host = (self.connection.host or "").strip().rstrip("/")
        if not host:
            return DEFAULT_BASE_URL
        if "://" not in host:
            host = f"https://{host}"
            if self.connection.port:
                host += f":{self.connection.port}"
        return host

    @property
    def application_ids(self) -> list[str]:
        """The `application_ids` extra as a list of numeric ids (empty when not set)."""
        return application_ids_of(
            self.connection.extra_dejson.get("application_ids"), self.appmetrica_conn_id
        )

    def get_client(self, **options: Any) -> AppMetricaClient:
        """An AppMetricaClient for this connection (options override the connection's)."""
        conn = self.connection
        conn_id = self.appmetrica_conn_id
        extras = conn.extra_dejson
        kwargs: dict[str, Any] = {"base_url": self.base_url}
        for extra, argument in (
            ("poll_interval", "poll_interval"),
            ("poll_timeout", "poll_timeout"),
        ):
            value = extra_number(extras, extra, conn_id)
            if value is not None:
                if value <= 0:
                    raise ConnectionMissing(
                        f"Airflow connection {conn_id!r}: extra {extra!r} must be positive, "
                        f"got {value}"
                    )
                kwargs[argument] = value
        kwargs.update(options)
        token = require(conn.password, conn_id, "password", "the AppMetrica OAuth token")
        return AppMetricaClient(token, **kwargs)

    def get_conn(self) -> AppMetricaClient:
        """Same as `get_client()` (the BaseHook interface)."""
        return self.get_client()
