"""The body guard on a real server: uvicorn in a subprocess, 300 MB chunked bodies, its RSS."""

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
import psutil
import pytest

from devtools.sandbox.yandex_id import YandexIdSandbox

pytestmark = pytest.mark.unit  # uvicorn + the Yandex ID stand-in; no database, no S3

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
BODY_MB = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`uvicorn api.main:app` in a subprocess, with its own empty temporary directory."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], tmp: Path) -> None:
        self.port = port
        self.process = process
        self.tmp = tmp
        self.ps = psutil.Process(process.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def spooled_files(self) -> list[str]:
        """Files under the server's temp dir: on disk, or open (also unlinked) by the server."""
        listed = [str(path) for path in self.tmp.rglob("*")]
        open_now = []
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(self.tmp)):
                open_now.append(target)
        return listed + open_now


@pytest.fixture(scope="module")
def server(
    yandex_id: YandexIdSandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API on a free port; 8 MB body limit (4 MB for /db); no database or S3 behind it."""
    work = tmp_path_factory.mktemp("server")
    tmp = work / "tmp"
    tmp.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "dags"), str(ROOT)]),
        "TMPDIR": str(tmp),
        "YANDEX_LOGIN_URL": yandex_id.url,
        "AUTH_READ_ACCESS": "demo-reader",
        "AUTH_WRITE_ACCESS": "demo-writer",
        "API_MAX_BODY_MB": "8",
        "API_DB_MAX_BODY_MB": "4",
        "DB_DSN": "host=127.0.0.1 port=9 dbname=none user=none connect_timeout=1",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "S3_BUCKET_NAME": "nowhere",
        "LOGGING_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--no-access-log"],
        cwd=work,
        env=env,
    )
    started = Server(port, process, tmp)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(started.url + "/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
            time.sleep(0.2)
        yield started
    finally:
        process.terminate()
        process.wait(timeout=10)


def send_chunked(
    server: Server, path: str, headers: dict[str, str], total: int, first: bytes = b""
) -> tuple[int, bytes, int]:
    """Stream `total` bytes as a chunked body; the status, the answer and the bytes sent."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    sent = 0

    def pump() -> None:
        nonlocal sent
        block = b"x" * MB
        try:
            sock.sendall(head.encode())
            if first:
                sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
                sent += len(first)
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what we want

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    answer = b""
    sock.settimeout(60)
    try:
        while b"\r\n\r\n" not in answer or not _complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
        sender.join(timeout=10)
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer, sent


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


JSON_START = b'{"data": [{"device_id": "'
MULTIPART = "multipart/form-data; boundary=XyZ"
MULTIPART_START = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


@pytest.mark.parametrize(
    ("path", "content_type", "first"),
    [
        ("/db/mobile-devices", "application/json", JSON_START),
        ("/s3/upload?key=big.bin", MULTIPART, MULTIPART_START),
    ],
)
def test_anonymous_chunked_300mb_costs_nothing(server, path, content_type, first):
    before = server.rss()
    status, answer, sent = send_chunked(
        server, path, {"Content-Type": content_type}, BODY_MB * MB, first
    )
    assert status == 401, answer[:300]
    assert b'"errors"' in answer and b"Authorization" in answer
    assert sent < BODY_MB * MB  # the server stopped the stream
    assert server.rss() - before < 20 * MB
    assert server.spooled_files() == []


@pytest.mark.parametrize(
    ("path", "content_type", "first", "limit"),
    [
        ("/db/mobile-devices", "application/json", JSON_START, 4),
        ("/s3/upload?key=big.bin", MULTIPART, MULTIPART_START, 8),
    ],
)
def test_writer_chunked_300mb_is_413_at_the_limit(server, path, content_type, first, limit):
    before = server.rss()
    headers = {"Content-Type": content_type, "Authorization": "OAuth demo-write-token"}
    status, answer, sent = send_chunked(server, path, headers, BODY_MB * MB, first)
    assert status == 413, answer[:300]
    assert f"{limit} MB".encode() in answer
    assert sent < BODY_MB * MB
    assert server.rss() - before < 20 * MB
    assert server.spooled_files() == []


def test_declared_length_over_the_limit_is_413_before_a_byte(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /s3/upload?key=a HTTP/1.1\r\nHost: x\r\nContent-Length: {9 * MB}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        sock.settimeout(30)
        answer = b""
        while not _complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"API_MAX_BODY_MB" in answer
