"""DAG `user_properties`: raw user properties → permanent and changeable user properties."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag

from dwh_helper.operators.assets import AMPLITUDE_EVENTS
from dwh_helper.operators.schedule import DAG_DEFAULTS, date_param, run_migrations
from dwh_helper.operators.user_properties import MigrateUserPropertiesOperator

DOC = """
### User properties

Turns the raw user properties that `amplitude_events` lands in
`tmp_user_properties` into `permanent_user_properties` (one row per person: their
earliest event's, by `event_time` then `uuid`) and `changeable_user_properties` (a
row for each event whose state differs from the person's event before it), following
`field_mappings.yaml`. The tables do not depend on the order rows arrive in: a person
with rows older than ones already migrated (a backfill, a retried load) has their
history re-derived from the oldest such row (docs/user-properties.md).

* **Schedule**: whenever an `amplitude_events` run has loaded all its files (its
  `publish` task updates the `dwh://public/amplitude_events` Asset); also runnable by hand.
* **Params**: `since` / `until` (dates, both inclusive, UTC; empty = everything
  pending), `batch_size` (rows per transaction), `strict` (keys missing from the
  mapping reject the record instead of being only reported).
* **Resumable**: every batch is one transaction (writes + `migrated = true`);
  a failed or retried run continues where it stopped, with no duplicates.
* **Rejects**: a record whose key value (`ehr_id`, `uuid`, `event_time`) cannot be
  converted goes to `load_rejects` (source `user_properties`, kind `record`) and stays
  pending until the mapping is fixed; any other invalid value is stored NULL and
  reported there (kind `value`) while the record loads (docs/mappings.md). The task
  fails (without retries) when the share of new rejected records exceeds
  `ETL_REJECT_RATIO`.
* **Result**: the counts (processed, rejected, values nulled and repaired, inserted,
  unknown keys) are in
  the task's XCom and in its log's summary line.

Connection: `dwh_postgres`.
"""


@dag(
    dag_id="user_properties",
    schedule=[AMPLITUDE_EVENTS],
    start_date=datetime(2024, 1, 1),
    tags=["dwh", "user-properties", "amplitude"],
    doc_md=DOC,
    **DAG_DEFAULTS,
    params={
        "since": date_param(
            "First day (UTC) of event_time to migrate; empty = no lower bound.", title="Since"
        ),
        "until": date_param(
            "Last day (UTC, inclusive) of event_time to migrate; empty = no bound.", title="Until"
        ),
        "batch_size": Param(
            5000, type="integer", minimum=1, maximum=100000, description="Rows per transaction."
        ),
        "strict": Param(
            False, type="boolean", description="Reject records carrying keys the mapping lacks."
        ),
    },
)
def user_properties() -> None:
    """Apply the DWH schema, then migrate pending user properties."""

    migrate_user_properties = MigrateUserPropertiesOperator(
        task_id="migrate_user_properties",
        since="{{ params.since }}",
        until="{{ params.until }}",
        batch_size="{{ params.batch_size }}",
        strict="{{ params.strict }}",
    )
    run_migrations() >> migrate_user_properties


user_properties()
