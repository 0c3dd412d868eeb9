"""`/amplitude/export` over HTTP on the Amplitude sandbox: the zip equals the sandbox's events."""

from __future__ import annotations

import asyncio
import io
import json
import re
import tempfile
import zipfile
from datetime import UTC, date, datetime

import pytest
from pydantic import SecretStr

from api.downloads import WorkDirFileResponse
from dwh_helper.sources.amplitude import ExportWindow

READ = {"Authorization": "OAuth demo-read-token"}

pytestmark = pytest.mark.unit  # local HTTP stand-ins only: no PostgreSQL, no S3


@pytest.fixture
def amp_client(settings, amplitude_settings, api_settings, make_client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings.amplitude = amplitude_settings
    with make_client(settings, api_settings) as client:
        yield client


def _filename(response) -> str:
    match = re.search(r'filename="([^"]+)"', response.headers["content-disposition"])
    assert match, response.headers["content-disposition"]
    return match.group(1)


def test_export_equals_the_sandbox_events(amp_client, amplitude_sandbox, tmp_path):
    response = amp_client.get(
        "/amplitude/export",
        headers=READ,
        params={"start": "20240501", "end": "20240502", "source": "web"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert _filename(response) == "amplitude_web_20240501_20240502.zip"  # what curl -OJ saves
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["amplitude_web_20240501_20240502.json"]
        lines = archive.read("amplitude_web_20240501_20240502.json").decode().splitlines()
    expected = [
        event
        for day in (date(2024, 5, 1), date(2024, 5, 2))
        for event in amplitude_sandbox.events("web", ExportWindow.for_day(day))
    ]
    assert len(expected) > 100
    assert [json.loads(line) for line in lines] == expected
    assert list(tmp_path.iterdir()) == []  # the work directory is gone after the response


def test_an_empty_day_exports_an_empty_file(amp_client, amplitude_sandbox):
    amplitude_sandbox.faults.empty_days = {date(2024, 5, 1)}
    response = amp_client.get(
        "/amplitude/export",
        headers=READ,
        params={"start": "20240501", "end": "20240501", "source": "mobile"},
    )
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.read("amplitude_mobile_20240501_20240501.json") == b""


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2024-05-01", "end": "20240501", "source": "web"}, "start"),
        ({"start": "20241301", "end": "20241301", "source": "web"}, "start"),
        ({"start": "20240501", "end": "2024050", "source": "web"}, "end"),
        ({"start": "20240502", "end": "20240501", "source": "web"}, "end"),
        ({"start": "20240101", "end": "20240301", "source": "web"}, "end"),
        ({"start": "20240501", "end": "20240501", "source": "ios"}, "source"),
        ({"start": "20240501", "source": "web"}, "end"),
    ],
)
def test_bad_parameters_are_422(amp_client, amplitude_sandbox, params, field):
    response = amp_client.get("/amplitude/export", headers=READ, params=params)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert amplitude_sandbox.export_calls == 0


def test_a_day_not_ready_yet_is_422(amp_client):
    today = datetime.now(UTC).strftime("%Y%m%d")
    response = amp_client.get(
        "/amplitude/export", headers=READ, params={"start": today, "end": today, "source": "web"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "end"


def test_upstream_failures_map_to_502(amp_client, amplitude_sandbox, tmp_path):
    amplitude_sandbox.faults.server_error_first = 5
    response = amp_client.get(
        "/amplitude/export",
        headers=READ,
        params={"start": "20240501", "end": "20240501", "source": "web"},
    )
    assert response.status_code == 502
    assert "failed after 1 attempt" in response.json()["detail"]
    assert list(tmp_path.iterdir()) == []


def test_a_timeout_maps_to_504_and_a_rate_limit_passes_its_retry_after(
    settings, amplitude_settings, api_settings, make_client, amplitude_sandbox
):
    # the status comes from the error's fields (timed_out, retry_after), not from its text
    settings.amplitude = amplitude_settings.model_copy(update={"timeout_seconds": 0.3})
    params = {"start": "20240501", "end": "20240501", "source": "web"}
    amplitude_sandbox.faults.stall_first = 1
    amplitude_sandbox.faults.stall_seconds = 1.5
    with make_client(settings, api_settings) as client:
        timed_out = client.get("/amplitude/export", headers=READ, params=params)
        amplitude_sandbox.faults.rate_limit_first = 1
        amplitude_sandbox.faults.retry_after = 17
        limited = client.get("/amplitude/export", headers=READ, params=params)
    assert timed_out.status_code == 504, timed_out.text
    assert timed_out.headers["retry-after"] == "60"
    assert limited.status_code == 502, limited.text
    assert limited.headers["retry-after"] == "17"
    assert "HTTP 429" in limited.json()["detail"]


def test_wrong_keys_are_502_naming_the_settings(
    settings, amplitude_settings, api_settings, make_client
):
    settings.amplitude = amplitude_settings.model_copy(
        update={"web_secret_key": SecretStr("wrong")}
    )
    with make_client(settings, api_settings) as client:
        response = client.get(
            "/amplitude/export",
            headers=READ,
            params={"start": "20240501", "end": "20240501", "source": "web"},
        )
    assert response.status_code == 502
    assert "AMPLITUDE_WEB_CLIENT_ID" in response.json()["detail"]
    assert "wrong" not in response.json()["detail"]


def test_unconfigured_project_is_503(settings, api_settings, make_client):
    with make_client(settings, api_settings) as client:
        response = client.get(
            "/amplitude/export",
            headers=READ,
            params={"start": "20240501", "end": "20240501", "source": "mobile"},
        )
    assert response.status_code == 503
    assert "AMPLITUDE_MOBILE_CLIENT_ID" in response.json()["detail"]


def test_work_dir_removed_when_the_client_disconnects(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    target = workdir / "a.zip"
    target.write_bytes(b"x" * (3 * 1024 * 1024))
    response = WorkDirFileResponse(target, workdir, filename="a.zip", media_type="application/zip")

    async def receive():
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    scope = {"type": "http", "method": "GET", "headers": [], "path": "/"}
    with pytest.raises(OSError):
        asyncio.run(response(scope, receive, send))
    assert not workdir.exists()
