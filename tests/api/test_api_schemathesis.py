"""Property-based contract test: schemathesis over every operation of the live app.

The app runs under uvicorn on a real socket (real PostgreSQL, moto's S3 server, the Yandex
ID, Amplitude and AppMetrica stand-ins); schemathesis (pinned in requirements.in) generates
valid and invalid requests from the OpenAPI document with every check on, once with the read
token and once with the write token, a bounded number of examples per operation. Any server
error or any answer that contradicts the schema fails the test with schemathesis' report.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.settings import ApiSettings

pytestmark = [pytest.mark.db, pytest.mark.s3, pytest.mark.timeout(600)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 5
PHASES = "examples,fuzzing"
"""Not the coverage phase: its thousands of boundary cases take minutes (run it by hand with
`schemathesis --config-file tests/api/schemathesis.toml run URL/openapi.json --checks all`)."""
"""Examples per operation and phase: about a minute per token on this machine."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_url(settings, amplitude_settings, appmetrica_settings) -> Iterator[str]:
    """The API served by uvicorn in a thread; its base URL."""
    settings.amplitude = amplitude_settings
    settings.appmetrica = appmetrica_settings
    api_settings = ApiSettings(
        max_body_mb=2,
        db_max_body_mb=1,
        db_max_post_rows=100,
        amplitude_max_days=1,
        appmetrica_max_days=1,
        appmetrica_wait_seconds=0.5,
        transform_max_days=2,
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, api_settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.mark.parametrize("token", ["demo-read-token", "demo-write-token"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_url: str, token: str, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "14",
        "--header",
        f"Authorization: OAuth {token}",
        "--request-timeout",
        "30",
        "--generation-deterministic",
        "--phases",
        PHASES,
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        cwd=tmp_path,
        check=False,
    )
    report = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report
