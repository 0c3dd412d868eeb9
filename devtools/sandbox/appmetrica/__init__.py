"""A local AppMetrica Logs API that speaks the real wire protocol, with deterministic data.

`AppMetricaSandbox` serves `GET /logs/v1/export/<resource>.<csv|json>` and
`GET /management/v1/logsapi/status` on a `ThreadingHTTPServer` in a daemon
thread. Like the real API it checks `Authorization: OAuth <token>` (401
without it, 403 for a wrong token or an application the token cannot see),
answers 202 "Wait for result" / "Progress is N%" to the first `ready_after`
identical requests and 200 with the file afterwards, 429 when a 4th distinct
request would be queued for one application, 400 "Try to use more parts."
when a part holds more than `max_rows_per_part` rows, and gzips the body when
the client accepts it. Every value in a body is a string; `event_json` is a
JSON string inside it. The rows are generated from a seed (Cyrillic cities,
empty `ios_ifa` on Android, IPv6 addresses, quotes and commas in
`event_json`), so tests can ask the sandbox for the truth (`rows`,
`count_rows`, `body_bytes`).

Modules: `generator` (the deterministic rows and whole files), `protocol` (paths,
parameters, errors and file bodies, without sockets), `server` (`AppMetricaSandbox`,
the HTTP server and the truth about its data), `cli` (the command line).

Command line: `python -m devtools.sandbox appmetrica --port 8082` serves;
`... appmetrica --write-events FILE --rows 1000000 --fmt csv` writes a file.
"""

from devtools.sandbox.appmetrica.cli import main
from devtools.sandbox.appmetrica.generator import generate_rows, write_events_file
from devtools.sandbox.appmetrica.protocol import (
    EXPORT_PREFIX,
    MAX_QUEUED_PER_APPLICATION,
    STATUS_PATH,
    iter_body,
)
from devtools.sandbox.appmetrica.server import (
    DEMO_TOKEN,
    AppMetricaFaults,
    AppMetricaSandbox,
    SandboxRequest,
)

__all__ = [
    "DEMO_TOKEN",
    "EXPORT_PREFIX",
    "MAX_QUEUED_PER_APPLICATION",
    "STATUS_PATH",
    "AppMetricaFaults",
    "AppMetricaSandbox",
    "SandboxRequest",
    "generate_rows",
    "iter_body",
    "main",
    "write_events_file",
]
