"""Yandex ID under pressure: token storms, a hanging provider, a misconfigured URL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dwh_helper.config import YandexSettings

READ = {"Authorization": "OAuth demo-read-token"}


@pytest.fixture
def patient_client(settings, api_settings, make_client):
    """A client whose Yandex ID checks may take 10 s (a loaded machine must not turn 401s into
    503s here)."""
    settings.yandex = settings.yandex.model_copy(update={"timeout_seconds": 10})
    with make_client(settings, api_settings) as client:
        yield client


@pytest.mark.unit  # the Yandex ID stand-in only
def test_bogus_token_storm_asks_yandex_once(patient_client, yandex):
    client = patient_client
    before = yandex.requests
    bogus = {"Authorization": "OAuth bogus-token-of-a-storm"}

    def call(_: int) -> int:
        return client.get("/db/mobile-devices", headers=bogus).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(call, range(500)))
    assert statuses == [401] * 500
    assert yandex.requests - before == 1


@pytest.mark.unit  # the Yandex ID stand-in only
def test_distinct_bogus_tokens_are_each_asked_once(patient_client, yandex):
    client = patient_client
    before = yandex.requests
    tokens = [f"bogus-{n}" for n in range(20)]

    def call(n: int) -> int:
        token = tokens[n % len(tokens)]
        return client.get(
            "/db/mobile-devices", headers={"Authorization": f"OAuth {token}"}
        ).status_code

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(call, range(200)))
    assert set(statuses) == {401}
    assert yandex.requests - before == len(tokens)


@pytest.mark.db
def test_hanging_yandex_leaves_cached_callers_and_health_alone(
    settings, api_settings, make_client, yandex
):
    settings.yandex = settings.yandex.model_copy(update={"timeout_seconds": 30})
    with make_client(settings, api_settings) as client:
        assert client.get("/db/mobile-devices", headers=READ).status_code == 200  # cached now
        yandex.set_mode("hang")
        before = yandex.requests
        finished: list[int] = []
        lock = threading.Lock()

        def uncached(n: int) -> None:
            response = client.get("/db/mobile-devices", headers={"Authorization": f"OAuth new-{n}"})
            with lock:
                finished.append(response.status_code)

        # more hanging checks than the worker thread pool (40) has threads
        threads = [threading.Thread(target=uncached, args=(n,)) for n in range(60)]
        for thread in threads:
            thread.start()
        while yandex.requests - before < 16:  # every check slot is hanging at Yandex ID
            threading.Event().wait(0.01)
        cached = [client.get("/db/mobile-devices", headers=READ).status_code for _ in range(20)]
        health = client.get("/health").status_code
        with lock:
            done_while_hanging = list(finished)
        yandex.set_mode("ok")  # releases the hanging checks
        for thread in threads:
            thread.join(timeout=30)
    assert cached == [200] * 20
    assert health in (200, 503)  # answered (S3 is absent here), not stuck
    assert done_while_hanging == []  # the cached calls overtook every hanging check
    assert yandex.requests - before <= 60
    assert len(finished) == 60


@pytest.mark.unit  # the Yandex ID stand-in only
def test_yandex_404_is_503_for_the_operator(settings, api_settings, make_client, yandex):
    settings.yandex = YandexSettings(
        login_url=yandex.url + "/wrong-path", timeout_seconds=0.5, client_id="test-app"
    )
    with make_client(settings, api_settings) as client:
        response = client.get("/db/mobile-devices", headers=READ)
    assert response.status_code == 503
    assert "YANDEX_LOGIN_URL" in response.json()["detail"]
    assert response.headers["Retry-After"]
