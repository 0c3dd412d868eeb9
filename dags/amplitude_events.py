"""DAG `amplitude_events`: Amplitude (web, mobile) → S3 raw archives → six DWH event tables."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.interval import CronDataIntervalTimetable

from dwh_helper.config import AMPLITUDE_SOURCES
from dwh_helper.operators.amplitude import AmplitudeToS3Operator
from dwh_helper.operators.assets import AMPLITUDE_EVENTS, load_then_publish
from dwh_helper.operators.schedule import (
    AMPLITUDE_PARALLEL_EXPORTS,
    DAG_DEFAULTS,
    Dimension,
    day_range_params,
    plan_days,
    reload_param,
    run_migrations,
)

DOC = """
### Amplitude events → S3 → DWH

Every day at **03:00 UTC** (Amplitude data is complete about 2 hours after an hour ends) this
DAG exports the **previous UTC day** (`T00`..`T23`, filtered on `server_upload_time`) of each
Amplitude project and loads it:

1. `migrate_schema` — applies pending DWH migrations (idempotent).
2. `plan` — the (source, day) pairs of this run: the `start`..`end` range and `sources` of the
   params, else the data interval's day (scheduled and backfill runs) or the UTC day before the
   trigger time (manual runs, whether from the UI, the CLI or the REST API).
3. `extract` — one mapped task per (source, day): the export lands byte for byte in
   `s3://$S3_BUCKET_NAME/raw/amplitude/<source>/<YYYY>/<MM>/<DD>/<source>_<YYYYMMDD>.zip`
   (split windows get an `_<HH>-<HH>` suffix); a re-run overwrites the same keys. With
   `reload_from_s3` nothing is asked of Amplitude: the archives already in S3 are re-loaded.
4. `load` — one mapped task per (source, day): each archive is streamed from S3 into
   `mobile_devices`, `events_part`, `technical_data`, `tmp_event_properties`,
   `tmp_user_properties` and `user_locations`, one transaction per file
   (`INSERT … ON CONFLICT DO NOTHING`: re-running changes nothing). Bad records go to
   `load_rejects`; more than `ETL_REJECT_RATIO` of them fails the file.
5. `publish` — once every `load` of the run succeeded, updates the `dwh://public/amplitude_events`
   asset (once per run, not per archive), which triggers `user_properties`: it starts after the
   whole run's data landed.

Connections: `amplitude_web`, `amplitude_mobile`, `aws_default`, `dwh_postgres`; the bucket is
`S3_BUCKET_NAME`. At most 2 `extract` tasks run at once (`max_active_tis_per_dag`, no pool to
create). `migrate_schema` fails the run at once, naming the command to run, when a connection
it needs is missing.

Backfill: trigger with `{"start": "2024-03-01", "end": "2024-03-31"}`, or
`airflow backfill create --dag-id amplitude_events --from-date 2024-03-01 --to-date 2024-03-31`.
"""


@dag(
    dag_id="amplitude_events",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["amplitude", "dwh", "raw"],
    doc_md=DOC,
    **DAG_DEFAULTS,
    params={
        **day_range_params("UTC day"),
        "sources": Param(
            list(AMPLITUDE_SOURCES),
            type="array",
            items={"type": "string", "enum": list(AMPLITUDE_SOURCES)},
            description="Amplitude projects to export",
        ),
        "reload_from_s3": reload_param("archives", "Amplitude"),
    },
)
def amplitude_events() -> None:
    """Amplitude → S3 → DWH, one mapped task per (source, day)."""
    migrate = run_migrations(amplitude="sources")
    plan = plan_days(Dimension("source", "sources", choices=AMPLITUDE_SOURCES))
    extract = AmplitudeToS3Operator.partial(
        task_id="extract",
        reload_from_s3="{{ params.reload_from_s3 }}",
        max_active_tis_per_dag=AMPLITUDE_PARALLEL_EXPORTS,
        map_index_template="{{ task.source }} {{ task.day }}",
        execution_timeout=timedelta(hours=3),
    ).expand_kwargs(plan)
    migrate >> plan >> extract
    load_then_publish("amplitude", extract.output, AMPLITUDE_EVENTS, nothing="no archive")


amplitude_events()
