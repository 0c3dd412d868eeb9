"""Assets the DAGs produce and consume (data-aware scheduling)."""

from __future__ import annotations

from airflow.sdk import Asset

AMPLITUDE_EVENTS = Asset("dwh://public/amplitude_events")
"""Updated by `amplitude_events` when Amplitude events land in the DWH; feeds `user_properties`."""

APPMETRICA_EVENTS = Asset("dwh://appmetrica/events")
"""Updated by `appmetrica_events` whenever AppMetrica rows land in the DWH."""
