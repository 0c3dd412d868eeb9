"""DAG `appmetrica_events`: AppMetrica Logs API → S3 raw files → schema `appmetrica` in the DWH."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.interval import CronDataIntervalTimetable

from dwh_helper.operators.appmetrica import (
    RESOURCES,
    AppMetricaToS3Operator,
    appmetrica_dimensions,
)
from dwh_helper.operators.assets import APPMETRICA_EVENTS, load_then_publish
from dwh_helper.operators.schedule import (
    APPMETRICA_PARALLEL_EXPORTS,
    DAG_DEFAULTS,
    day_range_params,
    plan_days,
    reload_param,
    run_migrations,
)

DOC = """
### AppMetrica Logs API → S3 → DWH (`appmetrica` schema)

Every day at **04:00 UTC** this DAG exports the **previous day** (`00:00:00`..`23:59:59`) of
each AppMetrica application and resource and loads it:

1. `migrate_schema` — applies pending DWH migrations (idempotent; creates schema `appmetrica`).
2. `plan` — the (application, resource, day) items of this run: the `start`..`end` range, else
   the data interval's day (scheduled and backfill runs) or the UTC day before the trigger time
   (manual runs, whether from the UI, the CLI or the REST API); applications from the
   `application_ids` param, else the `application_ids` extra of connection `appmetrica_default`;
   resources from `resources` (default `events`).
3. `extract` — one mapped task per (application, resource, day), named `<app> <resource> <day>`:
   the Logs API file lands byte for byte at
   `s3://$S3_BUCKET_NAME/raw/appmetrica/<app>/<resource>/<YYYY>/<MM>/<DD>/<resource>_<app>_<YYYYMMDD>.csv`
   (`_partNNNNofMMMM` when AppMetrica asks for parts); a re-run overwrites the same keys. The client
   polls while AppMetrica prepares the file (202), waits on 429 and retries 5xx. With
   `reload_from_s3` nothing is asked of AppMetrica: the files already in S3 are re-loaded.
4. `load` — one mapped task per extract: each file is streamed from S3 into `appmetrica.<resource>`
   through `transform/mappings/appmetrica.yaml`, one transaction per file, keyed by a deterministic
   `row_uuid` (`INSERT … ON CONFLICT DO NOTHING`: re-running changes nothing). Bad records go to
   `load_rejects`; more than `ETL_REJECT_RATIO` of them fails the file.
5. `publish` — once every `load` of the run succeeded, updates the `dwh://appmetrica/events`
   asset (once per run, not per file).

**Concurrency**: AppMetrica queues at most **3 requests per application**; at most 3 `extract`
tasks of this DAG run at once (`max_active_tis_per_dag`, shared by all applications, so it is
conservative when several are exported). No pool has to be created first. `migrate_schema` fails
the run at once, naming the command to run, when a connection it needs is missing.

Connections: `appmetrica_default` (password = OAuth token; extras `application_ids`,
`poll_interval`, `poll_timeout`; host = base URL when set), `aws_default`, `dwh_postgres`; the
bucket is `S3_BUCKET_NAME`.

Manual run / backfill: trigger with `{"start": "2024-03-01", "end": "2024-03-07",
"application_ids": ["1111"], "resources": ["events"]}`;
`fields` narrows the export, `date_dimension` = `receive` selects by server receive time.
"""


@dag(
    dag_id="appmetrica_events",
    schedule=CronDataIntervalTimetable("0 4 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["appmetrica", "dwh", "raw"],
    doc_md=DOC,
    **DAG_DEFAULTS,
    params={
        **day_range_params("day"),
        "application_ids": Param(
            [],
            type="array",
            items={"type": "string", "pattern": "^[0-9]+$"},
            description="AppMetrica application ids (default: the connection's application_ids)",
        ),
        "resources": Param(
            ["events"],
            type="array",
            items={"type": "string", "enum": list(RESOURCES)},
            description="Logs API resources to export",
        ),
        "fields": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            description="Fields to export (default: every documented field of the resource)",
        ),
        "date_dimension": Param(
            "default",
            type="string",
            enum=["default", "receive"],
            description="`default` = device time, `receive` = server receive time",
        ),
        "reload_from_s3": reload_param("files", "AppMetrica"),
    },
)
def appmetrica_events() -> None:
    """AppMetrica → S3 → DWH, one mapped task per (application, resource, day)."""
    migrate = run_migrations(appmetrica="appmetrica_default")
    plan = plan_days(*appmetrica_dimensions())
    extract = AppMetricaToS3Operator.partial(
        task_id="extract",
        fields="{{ params.fields }}",
        date_dimension="{{ params.date_dimension }}",
        reload_from_s3="{{ params.reload_from_s3 }}",
        max_active_tis_per_dag=APPMETRICA_PARALLEL_EXPORTS,
        map_index_template="{{ task.application_id }} {{ task.resource }} {{ task.day }}",
        execution_timeout=timedelta(hours=3),
    ).expand_kwargs(plan)
    migrate >> plan >> extract
    load_then_publish("appmetrica", extract.output, APPMETRICA_EVENTS, nothing="no file")


appmetrica_events()
