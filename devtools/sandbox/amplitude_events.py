"""Deterministic, realistic Amplitude events and export archives for tests and benchmarks.

Everything here is a pure function of (seed, project id, hour): the same arguments give the
same events and the same archive bytes on every run. The code lives in the Amplitude
sandbox's `generator` (events), `population` (devices and users) and `protocol` (the
archive format); this module is the one import for code that only needs data:

- `hour_event_count` / `day_event_counts` — how many events an hour (a day) has.
- `iter_hour` / `generate_hour` — the events of one hour, ordered by `server_upload_time`.
- `write_archive` / `write_day_archive` — a ZIP of
  `{project_id}/{project_id}_{YYYY-MM-DD}_{H}#{n}.json.gz` NDJSON entries, streamed.
"""

from devtools.sandbox.amplitude.generator import (
    HOUR,
    day_event_counts,
    generate_hour,
    hour_event_count,
    iter_hour,
    iter_window_hours,
    write_day_archive,
)
from devtools.sandbox.amplitude.population import DEVICES_PER_PROJECT, USERS_PER_PROJECT
from devtools.sandbox.amplitude.protocol import (
    DEFAULT_EVENTS_PER_PART,
    GZIP_LEVEL,
    encode_event,
    entry_name,
    write_archive,
)

__all__ = [
    "DEFAULT_EVENTS_PER_PART",
    "DEVICES_PER_PROJECT",
    "GZIP_LEVEL",
    "HOUR",
    "USERS_PER_PROJECT",
    "day_event_counts",
    "encode_event",
    "entry_name",
    "generate_hour",
    "hour_event_count",
    "iter_hour",
    "iter_window_hours",
    "write_archive",
    "write_day_archive",
]
