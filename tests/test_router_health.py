"""What moves an endpoint's circuit breaker, and Retry-After, against fake OpenAI upstreams on a gateway with
keys: a refused credential (the gateway's own key, or a caller's BYOK key) is not an outage and pauses the
endpoint for nobody; a caller's own BYOK key running into its quota (429) pauses nothing for the others; a
short Retry-After is waited for before the retry on the same endpoint."""
from __future__ import annotations

import secrets
import time

import httpx
import pytest

from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import api_client, b64, gateway_env, parse_attempts, write_catalog
from fakes.openai_fake import OpenAIFake

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # 11.0 s
STT = {"upstream_model": "whisper-1", "pricing": {"per_second": 0.0001}}


@pytest.fixture(scope="module")
def fakes():
    f = {"alpha": OpenAIFake("sk-alpha-4f1c9e27").start(), "beta": OpenAIFake("sk-beta-0b8d63a5").start()}
    yield f
    for x in f.values():
        x.stop()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-health")
    providers = {
        "alpha": {"name": "Alpha", "adapter": "openai", "base_url": fakes["alpha"].base_url, "api_key": "sk-alpha-4f1c9e27"},
        "beta": {"name": "Beta", "adapter": "openai", "base_url": fakes["beta"].base_url, "api_key": "sk-beta-0b8d63a5"},
        # alpha's API with a key it no longer accepts (revoked, mistyped)
        "stale": {"name": "Stale", "adapter": "openai", "base_url": fakes["alpha"].base_url, "api_key": "sk-revoked"},
    }
    models = [
        {"id": "rh/stt", "name": "alpha then beta", "kind": "transcription",
         "endpoints": [{"provider": "alpha", **STT}, {"provider": "beta", **STT}]},
        {"id": "rh/stale", "name": "stale then beta", "kind": "transcription",
         "endpoints": [{"provider": "stale", **STT}, {"provider": "beta", **STT}]},
        {"id": "rh/beta-only", "name": "beta", "kind": "transcription", "endpoints": [{"provider": "beta", **STT}]},
    ]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    mgmt = "sk-ar-test-mgmt-" + secrets.token_hex(24)
    # two attempts per endpoint; two consecutive endpoint failures open its circuit for a minute
    env = gateway_env(cat, tmp, AUDIOROUTER_MANAGEMENT_KEY=mgmt, AUDIOROUTER_RETRY_ATTEMPTS="2",
                      AUDIOROUTER_BREAKER_THRESHOLD="2", AUDIOROUTER_BREAKER_COOLDOWN_S="60",
                      AUDIOROUTER_RETRY_AFTER_MAX_S="5")
    s = ServerProcess(env=env, tmp=tmp).start()
    s.mgmt = mgmt
    yield s
    s.stop()


@pytest.fixture
def api(gw, fakes):
    yield from api_client(gw, *fakes.values(), timeout=60)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(api, gw) -> tuple[str, str]:
    r = api.post("/api/v1/keys", json={"name": "caller " + secrets.token_hex(3)}, headers=bearer(gw.mgmt))
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["data"]["hash"]


def stt(api, key: str, model: str) -> httpx.Response:
    return api.post("/api/v1/audio/transcriptions", headers=bearer(key),
                    json={"model": model, "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})


def circuit(api, model: str, provider: str) -> str:
    author, slug = model.split("/")
    eps = api.get(f"/api/v1/models/{author}/{slug}/endpoints").json()["data"]["endpoints"]
    return next(e["circuit"] for e in eps if e["tag"] == provider)


def test_a_refused_gateway_key_does_not_pause_the_endpoint(gw, api):
    key, _ = new_key(api, gw)
    for _ in range(4):  # twice the breaker's threshold
        r = stt(api, key, "rh/stale")
        assert r.status_code == 200, r.text
        # tried on every request (a 401 is not retried on the same key), then the next provider serves
        assert parse_attempts(r.headers["x-route-attempts"]) == [("stale", 401), ("beta", 200)]
    assert circuit(api, "rh/stale", "stale") == "closed"


def test_a_callers_own_failing_byok_key_pauses_nothing_for_others(gw, api, fakes):
    a_key, a_hash = new_key(api, gw)
    b_key, _ = new_key(api, gw)
    made = api.post("/api/v1/byok", headers=bearer(gw.mgmt),
                    json={"provider": "alpha", "key": "sk-wrong-" + secrets.token_hex(16),
                          "allowed_api_key_hashes": [a_hash]})
    assert made.status_code == 201, made.text
    try:
        for _ in range(3):  # A's own key is refused: A falls back to beta every time
            r = stt(api, a_key, "rh/stt")
            assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 401), ("beta", 200)]
        r = stt(api, b_key, "rh/stt")  # B, on the gateway's key, is served by alpha as before
        assert r.status_code == 200 and parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 200)]

        fakes["alpha"].fail(429, "You exceeded your current quota", times=4)  # A's two requests, two tries each
        for _ in range(2):
            r = stt(api, a_key, "rh/stt")
            assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 429), ("alpha", 429), ("beta", 200)]
        assert circuit(api, "rh/stt", "alpha") == "closed"
        r = stt(api, b_key, "rh/stt")
        assert r.status_code == 200 and parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 200)]
    finally:
        api.delete(f"/api/v1/byok/{made.json()['data']['id']}", headers=bearer(gw.mgmt))


def test_a_short_retry_after_is_waited_for(gw, api, fakes):
    """429 with Retry-After: 1 (under AUDIOROUTER_RETRY_AFTER_MAX_S): the retry on the same endpoint comes at
    least a second later (the normal backoff here is 0.05-0.2 s), and it succeeds."""
    key, _ = new_key(api, gw)
    fakes["beta"].fail(429, "Rate limit reached, retry in 1s", retry_after=1, times=1)
    t0 = time.monotonic()
    r = stt(api, key, "rh/beta-only")
    waited = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert parse_attempts(r.headers["x-route-attempts"]) == [("beta", 429), ("beta", 200)]
    assert len(fakes["beta"].calls) == 2 and waited >= 1.0
