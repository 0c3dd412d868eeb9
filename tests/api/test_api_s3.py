"""`/s3` over HTTP on moto's S3 server: every endpoint, PATCH at offsets, key validation."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.byte_ranges import parse_range

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
    assert many["count"] == 1000 and many["next_continuation"]
    rest = client.get(many["next"], headers=READ).json()
    assert [item["key"] for item in rest["objects"]] == ["many/01000", "many/01001", "many/01002"]
    assert rest["next"] is None and rest["next_continuation"] is None


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


def test_listing_pages_with_limit_and_continuation(client, store):
    for number in range(7):
        store.client.put_object(Bucket=store.bucket, Key=f"p/{number}", Body=b"")
    store.client.put_object(Bucket=store.bucket, Key="p/sub/x", Body=b"")
    seen: list[str] = []
    params: dict[str, object] = {"prefix": "p/", "limit": 3}
    pages = 0
    while True:
        body = client.get("/s3/objects", headers=READ, params=params).json()
        pages += 1
        seen += [item["key"] for item in body["objects"]] + body["folders"]
        if body["next_continuation"] is None:
            break
        params = {**params, "continuation": body["next_continuation"]}
    assert pages == 3
    assert seen == [f"p/{n}" for n in range(7)] + ["p/sub/"]
    after = client.get("/s3/objects", headers=READ, params={"prefix": "p/", "continuation": "p/4"})
    assert [item["key"] for item in after.json()["objects"]] == ["p/5", "p/6"]


@pytest.mark.unit
def test_declared_key_patterns_match_what_is_enforced():
    import re

    from api.object_keys import KEY_PATTERN, PREFIX_PATTERN, _check_path

    samples = [
        "a",
        "a/b",
        "a/",
        "/a",
        "a//b",
        ".",
        "..",
        "a/./b",
        "a/../b",
        "...",
        ".a",
        "..a",
        "a/.b",
        "a\x01",
        "raw/2024/05/x.zip",
        "",
        "ж/файл",
        "a b",
        "a/...",
    ]
    for sample in samples:
        for pattern, empty in ((KEY_PATTERN, False), (PREFIX_PATTERN, True)):
            try:
                _check_path(sample, "key", 1024, allow_empty=empty)
                enforced = pattern is PREFIX_PATTERN or not sample.endswith("/")
            except Exception:  # noqa: BLE001
                enforced = False
            assert bool(re.fullmatch(pattern, sample)) == enforced, (pattern, sample)


def test_download_range_head_and_if_none_match(client, store):
    store.client.put_object(Bucket=store.bucket, Key="r.bin", Body=ORIGINAL)
    etag = f'"{store.head("r.bin").etag}"'
    params = {"key": "r.bin"}
    cases = {"bytes=2-4": b"234", "bytes=7-": b"789", "bytes=-3": b"789", "bytes=5-99": b"56789"}
    for header, expected in cases.items():
        part = client.get("/s3/download", headers={**READ, "Range": header}, params=params)
        assert part.status_code == 206, header
        assert part.content == expected
        assert part.headers["content-range"].endswith("/10")
    whole = client.get("/s3/download", headers={**READ, "Range": "bytes=0-1,4-5"}, params=params)
    assert whole.status_code == 200 and whole.content == ORIGINAL
    past = client.get("/s3/download", headers={**READ, "Range": "bytes=10-"}, params=params)
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */10"
    assert past.json()["errors"][0]["field"] == "Range"
    head = client.head("/s3/download", headers=READ, params=params)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "10" and head.headers["etag"] == etag
    same = client.get("/s3/download", headers={**READ, "If-None-Match": etag}, params=params)
    assert same.status_code == 304 and same.content == b""
    other = client.get("/s3/download", headers={**READ, "If-None-Match": '"x"'}, params=params)
    assert other.status_code == 200 and other.content == ORIGINAL


def test_if_match_guards_update_and_patch(client, store):
    store.client.put_object(Bucket=store.bucket, Key="m.txt", Body=ORIGINAL)
    etag = f'"{store.head("m.txt").etag}"'
    stale = {**WRITE, "If-Match": '"0000"'}
    files = {"file": ("x", b"AB")}
    for method, path, extra in (("PUT", "/s3/update", {}), ("PATCH", "/s3/patch", {"offset": 0})):
        refused = client.request(
            method, path, headers=stale, params={"key": "m.txt", **extra}, files=files
        )
        assert refused.status_code == 412, refused.text
        assert refused.json()["errors"][0]["field"] == "If-Match"
    assert store.open("m.txt").read() == ORIGINAL

    def patch_if_match(tag: str):  # noqa: ANN202 - the test client's response
        params = {"key": "m.txt", "offset": 0}
        return client.patch(
            "/s3/patch", headers={**WRITE, "If-Match": tag}, params=params, files=files
        )

    patched = patch_if_match(etag)
    assert patched.status_code == 200
    assert patched.headers["etag"] == f'"{patched.json()["etag"]}"' != etag
    assert store.open("m.txt").read() == b"AB23456789"
    again = patch_if_match(etag)
    assert again.status_code == 412
    missing = _upload_with(client, "new.txt", {"If-Match": etag})
    assert missing.status_code == 412 and store.head("new.txt") is None


def _upload_with(client, key: str, headers: dict[str, str]):
    return client.post(
        "/s3/upload", headers={**WRITE, **headers}, params={"key": key}, files={"file": ("x", b"1")}
    )


def test_twenty_concurrent_patches_lose_no_acknowledged_write(client, store):
    store.client.put_object(Bucket=store.bucket, Key="c.bin", Body=b"." * 20)

    def patch(offset: int) -> int:
        return client.patch(
            "/s3/patch",
            headers=WRITE,
            params={"key": "c.bin", "offset": offset},
            files={"file": ("x", bytes([65 + offset]))},
        ).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(patch, range(20)))
    assert set(statuses) <= {200, 412}
    content = store.open("c.bin").read()
    for offset, status in enumerate(statuses):
        if status == 200:
            assert content[offset] == 65 + offset, (offset, content)
    assert statuses.count(200) == 20  # one process: the key lock serialises them all


def test_a_patch_refuses_to_overwrite_a_change_made_elsewhere(store):
    """The final write is conditional: a change by another process after the read is a 412."""
    import io

    from dwh_helper.storage.patch import EtagMismatch, patch_object

    store.client.put_object(Bucket=store.bucket, Key="o.bin", Body=ORIGINAL)

    class ChangedMeanwhile(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            store.client.put_object(Bucket=store.bucket, Key="o.bin", Body=b"elsewhere")
            return super().read(size)

    with pytest.raises(EtagMismatch):
        patch_object(store, "o.bin", 0, ChangedMeanwhile(b"AB"), 2)
    assert store.open("o.bin").read() == b"elsewhere"


def test_a_range_with_non_ascii_digits_is_ignored_not_an_error():
    # str.isdigit() is true for "²", which int() refuses: such a Range is a syntax we ignore
    assert parse_range("bytes=\u00b2-", 10) is None
    assert parse_range("bytes=0-\u0665", 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 4)
