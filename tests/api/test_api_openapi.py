"""The OpenAPI schema documents every endpoint with its responses and errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app

pytestmark = pytest.mark.unit

EXPECTED = {
    ("get", "/health"),
    ("get", "/amplitude/export"),
    ("get", "/appmetrica/ping"),
    ("get", "/appmetrica/export"),
    ("post", "/transform/user-properties"),
    ("get", "/s3/objects"),
    ("get", "/s3/object-info"),
    ("get", "/s3/download"),
    ("head", "/s3/download"),
    ("post", "/s3/upload"),
    ("put", "/s3/update"),
    ("patch", "/s3/patch"),
    ("delete", "/s3/delete"),
    ("get", "/loads"),
    ("get", "/loads/summary"),
    ("get", "/loads/summary.html"),
    *[
        (method, f"/db/{table}")
        for table in (
            "events-part",
            "mobile-devices",
            "permanent-user-properties",
            "changeable-user-properties",
            "technical-data",
            "event-properties",
            "user-properties",
            "user-locations",
        )
        for method in ("get", "post")
    ],
}


def test_every_endpoint_is_documented_with_errors():
    with TestClient(create_app()) as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/redoc").status_code == 200
    operations = {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == EXPECTED
    for (method, path), operation in operations.items():
        assert operation.get("summary"), (method, path)
        responses = operation["responses"]
        success = {"200", "201"} & set(responses)
        for code, answer in responses.items():
            if code >= "400" and code != "503" or code == "503" and path != "/health":
                schema_ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert schema_ref.endswith("/ErrorBody"), (method, path, code)
        assert success, (method, path)
        if path != "/health":
            assert {"401", "403", "503"} <= set(responses), (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, (method, path)
            assert operation["security"] == [{"YandexOAuth": []}], (method, path)
    ids = [operation["operationId"] for operation in operations.values()]
    assert len(set(ids)) == len(ids)
    assert operations[("get", "/db/events-part")]["operationId"] == "read_events_part"
    assert operations[("patch", "/s3/patch")]["operationId"] == "patch_s3_object"
    for operation in operations.values():
        assert {"422", "500"} <= set(operation["responses"])
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"])
    download = operations[("get", "/amplitude/export")]["responses"]["200"]["content"]
    assert "application/zip" in download
    assert "202" in operations[("get", "/appmetrica/export")]["responses"]
    assert "416" in operations[("patch", "/s3/patch")]["responses"]


def test_constraints_are_declared():
    schema = create_app().openapi()
    components = schema["components"]["schemas"]
    device = components["MobileDevicesRow"]["properties"]["device_id"]
    assert device["maxLength"] == 512 and device["pattern"]
    limit = next(
        p for p in schema["paths"]["/db/events-part"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["anyOf"][0]["maximum"] == 10000
    record_time = components["EventsPartRecord"]["properties"]["event_time"]["anyOf"][0]
    assert record_time == {"type": "string", "format": "date-time"}
    lat = components["UserLocationsRow"]["properties"]["location_lat"]["anyOf"][0]
    assert lat["type"] == "number"
