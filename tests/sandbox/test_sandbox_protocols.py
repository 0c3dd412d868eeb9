"""The sandboxes' protocol modules answer without a server: auth, request checks, bodies."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from devtools.sandbox.amplitude.protocol import (
    DEFAULT_PROJECTS,
    authenticate,
    entry_name,
    write_archive,
)
from devtools.sandbox.appmetrica.protocol import Reject, authorize, iter_body, parse_export

pytestmark = pytest.mark.unit

#: The parameters of a valid export request, as the server's handler receives them.
PARAMS = dict(
    parse_qsl(
        "application_id=1111&date_since=2024-03-01+00:00:00"
        "&date_until=2024-03-01+23:59:59&fields=event_name,city"
    )
)


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def test_amplitude_basic_auth_finds_the_project_or_says_why_not():
    web = DEFAULT_PROJECTS[0]
    assert authenticate(basic(web.api_key, web.secret_key), DEFAULT_PROJECTS) == (web, 200, "")
    assert authenticate(None, DEFAULT_PROJECTS)[1] == 401
    assert authenticate("Basic ???", DEFAULT_PROJECTS)[1:] == (401, "Malformed Basic credentials")
    wrong = authenticate(basic(web.api_key, "nope"), DEFAULT_PROJECTS)
    assert wrong == (None, 403, "Invalid API Key")


def test_amplitude_archive_splits_an_hour_into_parts_of_gzipped_ndjson():
    hour = datetime(2024, 3, 2, 5, tzinfo=UTC)
    events = [{"n": index, "city": "Москва"} for index in range(5)]
    buffer = io.BytesIO()
    assert write_archive(buffer, 7, [(hour, events)], events_per_part=2) == 5
    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
        lines = [
            json.loads(line)
            for name in names
            for line in gzip.decompress(archive.read(name)).splitlines()
        ]
    assert names == [entry_name(7, hour, part) for part in range(3)]
    assert names[0] == "7/7_2024-03-02_5#0.json.gz"
    assert lines == events


def test_appmetrica_parse_export_names_the_bad_parameter():
    export = parse_export("/logs/v1/export/events.csv", PARAMS)
    assert (export.resource, export.fmt, export.fields) == ("events", "csv", ("event_name", "city"))
    cases = [
        ({**PARAMS, "application_id": "x"}, "application_id"),
        ({**PARAMS, "date_since": "yesterday"}, "date_since"),
        ({**PARAMS, "fields": "event_name,nope"}, "nope"),
        ({**PARAMS, "use_utf8_bom": "maybe"}, "use_utf8_bom"),
    ]
    for params, named in cases:
        with pytest.raises(Reject) as caught:
            parse_export("/logs/v1/export/events.csv", params)
        assert caught.value.status == 400
        assert named in caught.value.message
    with pytest.raises(Reject, match="Unknown resource"):
        parse_export("/logs/v1/export/clicks.csv", PARAMS)


def test_appmetrica_authorize_and_bodies():
    headers = {"authorization": "OAuth secret"}
    authorize(headers, "secret", ("1111",), "1111")  # no exception: allowed
    for given, application, status in [
        ({}, None, 401),
        ({"authorization": "OAuth other"}, None, 403),
        (headers, "2222", 403),
    ]:
        with pytest.raises(Reject) as caught:
            authorize(given, "secret", ("1111",), application)
        assert caught.value.status == status
    rows = [{"event_name": 'a "b", c', "city": "Москва"}]
    csv_body = b"".join(iter_body(rows, ("event_name", "city"), "csv")).decode()
    assert csv_body == 'event_name,city\n"a ""b"", c",Москва\n'
    json_body = b"".join(iter_body(rows, ("city",), "json", use_utf8_bom=True)).decode()
    assert json_body.startswith("\ufeff")
    assert json.loads(json_body[1:]) == {"data": [{"city": "Москва"}]}
