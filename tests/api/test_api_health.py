"""`/health` reports PostgreSQL and S3 without auth, and 503 when one is unreachable."""

from __future__ import annotations

import pytest

from dwh_helper.config import PostgresSettings

pytestmark = [pytest.mark.db, pytest.mark.s3]


def test_health_ok_without_a_token(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["postgres"]["ok"] is True and body["s3"]["ok"] is True


def test_health_degraded_when_the_bucket_is_missing(settings, api_settings, make_client):
    settings.s3 = settings.s3.model_copy(update={"bucket_name": "no-such-bucket"})
    with make_client(settings, api_settings) as client:
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["postgres"]["ok"] is True
    assert body["s3"]["ok"] is False and body["s3"]["error"]


def test_health_degraded_when_postgres_is_down(settings, api_settings, make_client):
    from pydantic import SecretStr

    settings.db = PostgresSettings(
        dsn=SecretStr("host=127.0.0.1 port=9 dbname=x user=x connect_timeout=1"), minconn=0
    )
    api_settings = api_settings.model_copy(update={"db_pool_timeout_seconds": 0.5})
    with make_client(settings, api_settings) as client:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["postgres"]["ok"] is False
        assert response.json()["postgres"]["error"] in ("PoolTimeout", "OperationalError")
        rows = client.get("/db/mobile-devices", headers={"Authorization": "OAuth demo-read-token"})
    assert rows.status_code == 503
    assert "PostgreSQL" in rows.json()["detail"]


def test_health_reuses_its_probe_for_a_moment(client, store, clock):
    assert client.get("/health").status_code == 200
    store.client.delete_bucket(Bucket=store.bucket)
    assert client.get("/health").status_code == 200  # the cached probe
    clock.advance(2)
    degraded = client.get("/health")
    assert degraded.status_code == 503 and degraded.json()["s3"]["ok"] is False
