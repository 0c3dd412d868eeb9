"""`/s3` over HTTP on moto's S3 server: every endpoint, PATCH at offsets, key validation."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

READ = {"Authorization": "OAuth demo-read-token"}
WRITE = {"Authorization": "OAuth demo-write-token"}

pytestmark = pytest.mark.s3


def _upload(client, key: str, body: bytes, content_type: str = "text/plain"):
    return client.post(
        "/s3/upload",
        headers=WRITE,
        params={"key": key},
        files={"file": ("ignored.txt", body, content_type)},
    )


def test_upload_info_download_delete(client, store):
    response = _upload(client, "reports/май отчёт.csv", b"a,b\n1,2\n", "text/csv")
    assert response.status_code == 201, response.text
    written = response.json()
    assert written["key"] == "reports/май отчёт.csv" and written["size"] == 8
    assert written["etag"] == store.head("reports/май отчёт.csv").etag

    info = client.get("/s3/object-info", headers=READ, params={"key": "reports/май отчёт.csv"})
    assert info.status_code == 200
    assert info.json()["content_type"] == "text/csv" and info.json()["size"] == 8

    download = client.get("/s3/download", headers=READ, params={"key": "reports/май отчёт.csv"})
    assert download.status_code == 200
    assert download.content == b"a,b\n1,2\n"
    assert download.headers["content-type"].startswith("text/csv")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "filename*=UTF-8''%D0%BC%D0%B0%D0%B9%20" in disposition

    deleted = client.delete("/s3/delete", headers=WRITE, params={"key": "reports/май отчёт.csv"})
    assert deleted.json() == {"key": "reports/май отчёт.csv", "deleted": True}
    assert store.head("reports/май отчёт.csv") is None
    again = client.delete("/s3/delete", headers=WRITE, params={"key": "reports/май отчёт.csv"})
    assert again.status_code == 404


def test_upload_refuses_an_existing_key_and_update_replaces(client, store):
    assert _upload(client, "a.txt", b"one").status_code == 201
    response = _upload(client, "a.txt", b"two")
    assert response.status_code == 409
    assert "PUT /s3/update" in response.json()["detail"]
    assert store.open("a.txt").read() == b"one"
    replaced = client.put(
        "/s3/update", headers=WRITE, params={"key": "a.txt"}, files={"file": ("x", b"three")}
    )
    assert replaced.status_code == 200 and replaced.json()["size"] == 5
    assert store.open("a.txt").read() == b"three"
    missing = client.put(
        "/s3/update", headers=WRITE, params={"key": "b.txt"}, files={"file": ("x", b"3")}
    )
    assert missing.status_code == 404
    assert store.head("b.txt") is None


def test_missing_objects_are_404(client):
    for path in ("/s3/object-info", "/s3/download"):
        response = client.get(path, headers=READ, params={"key": "nope.bin"})
        assert response.status_code == 404
        assert "nope.bin" in response.json()["detail"]


def test_list_direct_children_and_folders_past_one_page(client, store):
    for key in ("top.txt", "raw/a.txt", "raw/b.txt", "raw/2024/05/x.zip", "raw/2025/y.zip"):
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"12")
    body = client.get("/s3/objects", headers=READ, params={"prefix": "raw/"}).json()
    assert body["prefix"] == "raw/"
    assert [item["key"] for item in body["objects"]] == ["raw/a.txt", "raw/b.txt"]
    assert body["folders"] == ["raw/2024/", "raw/2025/"]
    assert body["count"] == 2 and body["objects"][0]["size"] == 2
    root = client.get("/s3/objects", headers=READ).json()
    assert [item["key"] for item in root["objects"]] == ["top.txt"]
    assert root["folders"] == ["raw/"]

    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda number: store.client.put_object(
                    Bucket=store.bucket, Key=f"many/{number:05d}", Body=b""
                ),
                range(1003),
            )
        )
    many = client.get("/s3/objects", headers=READ, params={"prefix": "many/"}).json()
    assert many["count"] == 1003
    assert many["objects"][-1]["key"] == "many/01002"


ORIGINAL = b"0123456789"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, b"AB23456789"),
        (4, b"0123AB6789"),
        (9, b"012345678AB"),
        (10, b"0123456789AB"),
    ],
)
def test_patch_writes_at_the_offset(client, store, offset, expected):
    _upload(client, "p.txt", ORIGINAL)
    response = client.patch(
        "/s3/patch",
        headers=WRITE,
        params={"key": "p.txt", "offset": offset},
        files={"file": ("x", b"AB")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == len(expected)
    assert store.open("p.txt").read() == expected
    assert store.head("p.txt").content_type == "text/plain"


def test_patch_past_the_end_is_416(client, store):
    _upload(client, "p.txt", ORIGINAL)
    response = client.patch(
        "/s3/patch", headers=WRITE, params={"key": "p.txt", "offset": 11}, files={"file": b"AB"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
    assert store.open("p.txt").read() == ORIGINAL
    missing = client.patch(
        "/s3/patch", headers=WRITE, params={"key": "q.txt", "offset": 0}, files={"file": b"AB"}
    )
    assert missing.status_code == 404
    negative = client.patch(
        "/s3/patch", headers=WRITE, params={"key": "p.txt", "offset": -1}, files={"file": b"AB"}
    )
    assert negative.status_code == 422
    assert negative.json()["errors"][0]["field"] == "offset"


def test_patch_of_a_large_object_goes_by_multipart_copy(settings, api_settings, make_client, store):
    big = os.urandom(7 * 1024 * 1024)
    store.client.put_object(Bucket=store.bucket, Key="big.bin", Body=big)
    api_settings = api_settings.model_copy(update={"patch_copy_threshold_mb": 5, "max_body_mb": 8})
    with make_client(settings, api_settings) as client:
        response = client.patch(
            "/s3/patch",
            headers=WRITE,
            params={"key": "big.bin", "offset": 6 * 1024 * 1024},
            files={"file": ("x", b"PATCHED")},
        )
    assert response.status_code == 200, response.text
    offset = 6 * 1024 * 1024
    assert store.open("big.bin").read() == big[:offset] + b"PATCHED" + big[offset + 7 :]
    assert "-" in response.json()["etag"]  # a multipart ETag: the object was rebuilt in parts


@pytest.mark.parametrize(
    "key",
    ["", "../etc/passwd", "a/../b", "a/./b", "/abs", "a//b", "folder/", "x" * 1025, "a\nb"],
)
def test_bad_keys_are_422(client, key):
    for method, path in (
        ("GET", "/s3/object-info"),
        ("GET", "/s3/download"),
        ("DELETE", "/s3/delete"),
    ):
        headers = WRITE if method == "DELETE" else READ
        response = client.request(method, path, headers=headers, params={"key": key})
        assert response.status_code == 422, (path, key, response.text)
        assert response.json()["errors"][0]["field"] == "key"
    upload = _upload(client, key, b"x")
    assert upload.status_code == 422


def test_bad_prefix_is_422(client):
    response = client.get("/s3/objects", headers=READ, params={"prefix": "../"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "prefix"


def test_reader_cannot_write(client, store):
    assert _upload(client, "a.txt", b"x").status_code == 201
    for method, path in (("POST", "/s3/upload"), ("PUT", "/s3/update"), ("PATCH", "/s3/patch")):
        response = client.request(
            method, path, headers=READ, params={"key": "a.txt", "offset": 0}, files={"file": b"y"}
        )
        assert response.status_code == 403, path
    assert client.delete("/s3/delete", headers=READ, params={"key": "a.txt"}).status_code == 403
    assert store.open("a.txt").read() == b"x"


def test_upload_without_a_file_is_422(client):
    response = client.post("/s3/upload", headers=WRITE, params={"key": "a.txt"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "file"


def test_upload_over_the_body_limit_is_413(client, store):
    response = _upload(client, "big.txt", b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert store.head("big.txt") is None


def test_s3_unreachable_is_503(settings, api_settings, make_client, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    settings.s3 = settings.s3.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
    with make_client(settings, api_settings) as client:
        response = client.get("/s3/objects", headers=READ)
    assert response.status_code == 503
    assert "S3 is unavailable" in response.json()["detail"]


def test_bucket_not_configured_is_503(settings, api_settings, make_client):
    settings.s3 = settings.s3.model_copy(update={"bucket_name": None})
    with make_client(settings, api_settings) as client:
        response = client.get("/s3/objects", headers=READ)
    assert response.status_code == 503
    assert "S3_BUCKET_NAME" in response.json()["detail"]
