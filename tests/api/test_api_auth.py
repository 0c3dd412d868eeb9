"""Auth matrix over HTTP: Yandex ID stand-in, read/write lists, 503 when it is down, cache TTL."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.auth import REFUSED_TTL_SECONDS
from api.main import create_app
from devtools.sandbox.yandex_id import DEMO_CLIENT_ID
from dwh_helper.config import AuthSettings

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "Bearer demo-write-token"}
STRANGER = {"Authorization": "OAuth demo-stranger-token"}
DEVICE = {"data": [{"device_id": "dev-1", "device_brand": "acme"}]}


@pytest.mark.unit  # the Yandex ID stand-in only
def test_no_token_is_401_with_www_authenticate(client):
    response = client.get("/db/mobile-devices")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("OAuth")
    assert "oauth.yandex.ru/authorize" in response.json()["detail"]


@pytest.mark.unit  # the Yandex ID stand-in only
@pytest.mark.unit  # the Yandex ID stand-in only
@pytest.mark.parametrize(
    "header",
    [
        "OAuth unknown-token",
        "Bearer unknown-token",
        "Basic ZGVtbzpkZW1v",
        "OAuth",
        "demo-read-token",
    ],
)
def test_bad_or_malformed_token_is_401(client, header):
    response = client.get("/db/mobile-devices", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.db
def test_valid_login_without_access_is_403(client):
    response = client.get("/db/mobile-devices", headers=STRANGER)
    assert response.status_code == 403
    assert "demo-stranger" in response.json()["detail"]


@pytest.mark.db
def test_reader_reads_but_cannot_write(client):
    assert client.get("/db/mobile-devices", headers=READ).status_code == 200
    response = client.post("/db/mobile-devices", headers=READ, json=DEVICE)
    assert response.status_code == 403
    assert "AUTH_WRITE_ACCESS" in response.json()["detail"]
    assert client.get("/db/mobile-devices", headers=READ).json()["count"] == 0


@pytest.mark.db
def test_writer_writes_and_reads(client):
    response = client.post("/db/mobile-devices", headers=WRITE, json=DEVICE)
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted_ids": ["dev-1"], "count": 1, "batches": 1}
    rows = client.get("/db/mobile-devices", headers=WRITE).json()["rows"]
    assert [row["device_id"] for row in rows] == ["dev-1"]


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_yandex_down_is_503_never_access(settings, api_settings, make_client, yandex, mode):
    settings.yandex = settings.yandex.model_copy(update={"timeout_seconds": 0.5})
    yandex.set_mode(mode)  # "hang": answers after 5 s, ten times the budget
    with make_client(settings, api_settings) as client:
        response = client.get("/db/mobile-devices", headers=READ)
    assert response.status_code == 503
    assert "Yandex ID" in response.json()["detail"]


@pytest.mark.unit  # the Yandex ID stand-in only
def test_yandex_unreachable_is_503(settings, api_settings, make_client):
    settings.yandex = settings.yandex.model_copy(update={"login_url": "http://127.0.0.1:9"})
    with make_client(settings, api_settings) as client:
        response = client.get("/db/mobile-devices", headers=READ)
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


@pytest.mark.db
def test_positive_answers_are_cached_until_the_ttl(client, yandex, clock):
    before = yandex.requests
    assert client.get("/db/mobile-devices", headers=READ).status_code == 200
    assert client.get("/db/mobile-devices", headers=READ).status_code == 200
    assert yandex.requests == before + 1
    yandex.set_mode("error")
    clock.advance(299)
    assert client.get("/db/mobile-devices", headers=READ).status_code == 200
    clock.advance(2)
    assert client.get("/db/mobile-devices", headers=READ).status_code == 503
    assert yandex.requests == before + 2


@pytest.mark.unit  # the Yandex ID stand-in only
def test_refused_tokens_are_cached_briefly(client, yandex, clock):
    before = yandex.requests
    for _ in range(3):
        response = client.get("/db/mobile-devices", headers={"Authorization": "OAuth nope"})
        assert response.status_code == 401
        assert response.json()["errors"][0]["field"] == "Authorization"
    assert yandex.requests == before + 1
    clock.advance(REFUSED_TTL_SECONDS + 1)
    assert (
        client.get("/db/mobile-devices", headers={"Authorization": "OAuth nope"}).status_code == 401
    )
    assert yandex.requests == before + 2


@pytest.mark.db
def test_client_id_pin_refuses_tokens_of_other_apps(settings, api_settings, make_client):
    settings.auth = AuthSettings(
        read_access=["demo-reader"], write_access=["demo-writer"], client_id=DEMO_CLIENT_ID
    )
    with make_client(settings, api_settings) as client:
        assert client.get("/db/mobile-devices", headers=WRITE).status_code == 200
        response = client.get(
            "/db/mobile-devices", headers={"Authorization": "OAuth other-app-token"}
        )
    assert response.status_code == 401
    assert "another application" in response.json()["detail"]


@pytest.mark.db
def test_the_token_is_never_logged(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.get("/db/mobile-devices", headers=READ)
        client.get("/db/mobile-devices", headers={"Authorization": "OAuth secret-bad-token"})
    assert "demo-reader" in caplog.text
    assert "demo-read-token" not in caplog.text
    assert "secret-bad-token" not in caplog.text


@pytest.mark.unit  # the Yandex ID stand-in only
def test_swagger_explains_how_to_get_a_token(settings, api_settings):
    with TestClient(create_app(settings, api_settings)) as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    scheme = schema["components"]["securitySchemes"]["YandexOAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "oauth.yandex.ru/authorize?response_type=token&client_id=" in scheme["description"]
    assert "client_id=test-app" in schema["info"]["description"]
    assert schema["paths"]["/db/mobile-devices"]["get"]["security"] == [{"YandexOAuth": []}]
    assert "/health" in schema["paths"] and "security" not in schema["paths"]["/health"]["get"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
