"""The contract around the endpoints: one error shape, 405 with Allow, unknown query parameters
refused, keyset pages with a `next` link."""

from __future__ import annotations

import pytest

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "Bearer demo-write-token"}


def _error_shape(response) -> dict:
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    assert body["detail"]
    for error in body["errors"]:
        assert set(error) == {"field", "message"}
    return body


@pytest.mark.unit  # the Yandex ID stand-in only
def test_404_and_405_have_the_error_shape_and_a_true_allow(client):
    missing = client.get("/no/such/path", headers=READ)
    assert missing.status_code == 404
    assert _error_shape(missing)["errors"][0]["field"] == "path"
    wrong = client.delete("/db/events-part", headers=WRITE)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"
    assert client.head("/db/events-part", headers=READ).headers["Allow"] == "GET, POST"
    assert _error_shape(wrong)["errors"][0]["field"] == "method"
    put = client.put("/s3/download", headers=WRITE)
    assert put.status_code == 405 and put.headers["Allow"] == "GET, HEAD"


@pytest.mark.unit  # the Yandex ID stand-in only
def test_unknown_query_parameters_are_422_before_anything_else(client, yandex):
    response = client.get("/db/events-part", headers=READ, params={"offset": 10, "limit": 5})
    assert response.status_code == 422
    body = _error_shape(response)
    assert [error["field"] for error in body["errors"]] == ["offset"]
    assert "after" in body["detail"]
    health = client.get("/health", params={"verbose": 1})
    assert health.status_code == 422
    assert _error_shape(health)["errors"][0]["field"] == "verbose"


@pytest.mark.unit  # the Yandex ID stand-in only
def test_anonymous_malformed_bodies_are_401_not_400(client):
    for content in (b"{not json", b"\xff\xfe"):
        response = client.post(
            "/db/mobile-devices", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401
        assert _error_shape(response)["errors"][0]["field"] == "Authorization"
    reader = client.post(
        "/s3/upload", params={"key": "a"}, headers=READ, files={"file": ("a", b"1")}
    )
    assert reader.status_code == 403


@pytest.mark.db
def test_keyset_pages_follow_next_to_the_end(client):
    data = [{"device_id": f"dev-{i:02d}", "device_model": f"m{i % 3}"} for i in range(11)]
    assert client.post("/db/mobile-devices", headers=WRITE, json={"data": data}).status_code == 200
    for sort in ({}, {"sort_by": "device_model"}, {"sort_by": "device_model", "sort_dir": "desc"}):
        seen: list[str] = []
        url, params = "/db/mobile-devices", {"limit": 4, **sort}
        pages = 0
        while url:
            body = client.get(url, headers=READ, params=params).json()
            seen += [row["device_id"] for row in body["rows"]]
            url, params = body["next"], None
            pages += 1
        assert pages == 3, sort
        assert sorted(seen) == sorted(row["device_id"] for row in data)
        assert len(seen) == len(set(seen))
        if sort.get("sort_dir") == "desc":
            models = [f"m{int(device[4:]) % 3}" for device in seen]
            assert models == sorted(models, reverse=True)


@pytest.mark.db
def test_keyset_pages_with_nulls_in_the_sort_column(client):
    data = [{"device_id": f"d{i}", "device_brand": None if i % 2 else f"b{i}"} for i in range(7)]
    client.post("/db/mobile-devices", headers=WRITE, json={"data": data})
    seen: list[str] = []
    url, params = "/db/mobile-devices", {"limit": 2, "sort_by": "device_brand"}
    while url:
        body = client.get(url, headers=READ, params=params).json()
        seen += [row["device_id"] for row in body["rows"]]
        url, params = body["next"], None
    assert seen == ["d0", "d2", "d4", "d6", "d1", "d3", "d5"]


@pytest.mark.db
def test_a_foreign_cursor_is_422_naming_after(client):
    for cursor in ("garbage", "eyJvIjpbXSwidiI6W119"):
        response = client.get("/db/mobile-devices", headers=READ, params={"after": cursor})
        assert response.status_code == 422
        assert _error_shape(response)["errors"][0]["field"] == "after"
