"""A local Amplitude Export API: `GET /api/2/export` with Basic auth, generated data and faults.

It speaks the real wire protocol (see `reference/amplitude-export-api.md`):
a ZIP of `{project_id}/{project_id}_{YYYY-MM-DD}_{H}#{n}.json.gz` NDJSON
entries for the hours in `start`..`end`, 404 for a window without data,
401/403 for missing/wrong keys, and switchable faults (`AmplitudeFaults`) for
the client's retry, bisection and validation paths. Data is a pure function of
the seed, so tests compare what they loaded against `events()` /
`archive_bytes()`.

Modules: `population` (each project's devices and users), `generator` (the events of an
hour and realistic day archives), `protocol` (the archive format, Basic auth, the API's
messages), `server` (`AmplitudeSandbox`, its faults and the truth about its data), `cli`
(the command line). `devtools.sandbox.amplitude_events` names the generator's public
functions in one place for tests and benchmarks.

Run it on its own with `python -m devtools.sandbox amplitude --port 8081`.
"""

from devtools.sandbox.amplitude.cli import build_parser, main
from devtools.sandbox.amplitude.protocol import (
    DEFAULT_PROJECTS,
    NON_ZIP_PAGE,
    NOT_FOUND_MESSAGE,
    TOO_LARGE_MESSAGE,
    SandboxProject,
)
from devtools.sandbox.amplitude.server import AmplitudeFaults, AmplitudeSandbox, SandboxRequest

__all__ = [
    "DEFAULT_PROJECTS",
    "NON_ZIP_PAGE",
    "NOT_FOUND_MESSAGE",
    "TOO_LARGE_MESSAGE",
    "AmplitudeFaults",
    "AmplitudeSandbox",
    "SandboxProject",
    "SandboxRequest",
    "build_parser",
    "main",
]
