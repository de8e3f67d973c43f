"""Spend limits (402 before any provider call, exact settlement, no overshoot under concurrency), request
rate (429 + Retry-After + X-RateLimit-*) and concurrency limits, over HTTP on SQLite and on PostgreSQL.
Costs come from a user catalog: speech at $0.001 a character, transcription at $0.001 a second."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import httpx
import pytest

from test_keys_support import STT_PRICE_PER_SECOND, TTS_PRICE_PER_CHAR, gw  # noqa: F401

TEN = "Ten chars."  # 10 characters -> $0.010
assert len(TEN) == 10
COST10 = 10 * TTS_PRICE_PER_CHAR


def generation(gw, gen_id: str, key: str | None = None) -> dict:
    deadline = time.time() + 30
    while True:  # a streamed answer is finalized just after its last byte
        r = gw.client.get(f"/api/v1/generation?id={gen_id}", headers=gw.auth(key))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if data["status"] != "incomplete" or time.time() > deadline:
            return data
        time.sleep(0.2)


def test_402_before_any_provider_is_called(gw):
    key, _ = gw.create_key(limit=0.002)  # the clip is 2.835 s -> $0.002835
    r = gw.transcribe(key)
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["code"] == 402 and "exceeds" in err["message"]
    assert err["metadata"]["estimated_cost"] == pytest.approx(2.835 * STT_PRICE_PER_SECOND, abs=2e-5)
    assert err["metadata"]["limit_remaining"] == pytest.approx(0.002)
    assert "x-provider" not in r.headers
    g = generation(gw, r.headers["x-generation-id"], gw.mgmt)
    assert g["status"] == "error" and g["error"]["status"] == 402 and g["provider_responses"] == []
    assert g["total_cost"] == 0
    info = gw.key_info(key)
    assert info["usage"] == 0 and info["limit_remaining"] == pytest.approx(0.002)
    # the OpenAI dialect says the same in its own envelope
    r = gw.client.post("/v1/audio/speech", json={"model": "test/priced-tts", "input": "x" * 10}, headers=gw.auth(key))
    assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_quota"


def test_transcription_is_billed_per_second(gw):
    key, _ = gw.create_key(limit=1)
    r = gw.transcribe(key)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["seconds"] == pytest.approx(2.835, abs=0.01)
    assert usage["cost"] == pytest.approx(usage["seconds"] * STT_PRICE_PER_SECOND, rel=1e-6)
    g = generation(gw, r.headers["x-generation-id"], key)
    assert g["api_type"] == "stt" and g["status"] == "success" and g["total_cost"] == pytest.approx(usage["cost"])
    assert g["seconds"] == pytest.approx(usage["seconds"], abs=1e-3) and g["model"] == "test/priced-whisper"
    assert [p["status"] for p in g["provider_responses"]] == [200]
    info = gw.key_info(key)
    assert info["usage"] == pytest.approx(usage["cost"]) and info["limit_remaining"] == pytest.approx(1 - usage["cost"])


def test_speech_is_billed_per_character_and_the_limit_holds(gw):
    key, data = gw.create_key(limit=0.03, limit_reset="daily")
    codes = []
    for _ in range(4):
        r = gw.speak(key, TEN)
        codes.append(r.status_code)
        if r.status_code == 200:
            assert float(r.headers["x-cost"]) == pytest.approx(COST10) and r.headers["x-characters"] == "10"
    assert codes == [200, 200, 200, 402]
    info = gw.key_info(key)
    assert info["usage"] == pytest.approx(3 * COST10) and info["usage_daily"] == pytest.approx(3 * COST10)
    assert info["limit_remaining"] == pytest.approx(0) and info["limit_reset"] == "daily"
    assert info["effective_budget"]["spend_usd"] == pytest.approx(3 * COST10)
    credits = gw.client.get("/api/v1/credits", headers=gw.auth(key)).json()["data"]
    assert credits["total_credits"] == pytest.approx(0.03) and credits["total_usage"] == pytest.approx(3 * COST10)
    # raising the limit lets the next request through
    r = gw.client.patch(f"/api/v1/keys/{data['hash']}", json={"limit": 0.05}, headers=gw.auth())
    assert r.status_code == 200 and r.json()["data"]["limit_remaining"] == pytest.approx(0.02)
    assert gw.speak(key, TEN).status_code == 200
    # free models still run on an exhausted key
    assert gw.client.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": "Free."},
                          headers=gw.auth(key)).status_code == 200


def test_concurrent_requests_cannot_overshoot_the_limit(gw):
    limit = 0.035  # room for 3 requests of $0.01, not 4
    key, _ = gw.create_key(limit=limit)

    def one(_):
        with httpx.Client(base_url=gw.url, timeout=120) as c:
            r = c.post("/api/v1/audio/speech", json={"model": "test/priced-tts", "input": TEN}, headers=gw.auth(key))
            return r.status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert set(codes) <= {200, 402}, codes
    assert codes.count(200) >= 1
    info = gw.key_info(key)
    assert info["usage"] <= limit + COST10
    assert info["usage"] == pytest.approx(codes.count(200) * COST10)
    assert info["limit_reserved"] == 0  # every reservation was settled or released


def test_rate_limit_gives_429_with_retry_after_and_headers(gw):
    key, _ = gw.create_key(rate_limit_rpm=3)
    seen = []
    for _ in range(3):
        r = gw.client.get("/api/v1/key", headers=gw.auth(key))
        assert r.status_code == 200
        seen.append(int(r.headers["x-ratelimit-remaining"]))
        assert r.headers["x-ratelimit-limit"] == "3"
    assert seen == [2, 1, 0]
    r = gw.client.get("/api/v1/key", headers=gw.auth(key))
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-remaining"] == "0" and int(r.headers["x-ratelimit-reset"]) >= int(time.time())
    assert r.json()["error"]["metadata"]["type"] == "rate_limit_exceeded"
    r = gw.client.post("/v1/audio/speech", json={"model": "test/priced-tts", "input": "Hi."}, headers=gw.auth(key))
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error" and "retry-after" in r.headers
    # other keys are not affected
    other, _ = gw.create_key()
    assert gw.client.get("/api/v1/key", headers=gw.auth(other)).status_code == 200


def test_concurrency_limit_gives_429(gw):
    key, _ = gw.create_key(max_concurrency=1)
    long_text = "This sentence keeps the speech stream busy for a while. " * 60
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        with c.stream("POST", "/api/v1/audio/speech", json={"model": "local/hibari", "input": long_text},
                      headers=gw.auth(key)) as held:
            assert held.status_code == 200
            chunks = held.iter_bytes()  # keep the iterator: dropping it would close the stream
            assert next(chunks)  # the stream is open and unfinished
            r = gw.client.get("/api/v1/key", headers=gw.auth(key))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["metadata"]["type"] == "concurrency_limit_exceeded"
    deadline = time.time() + 60
    while (r := gw.client.get("/api/v1/key", headers=gw.auth(key))).status_code == 429 and time.time() < deadline:
        time.sleep(0.25)
    assert r.status_code == 200  # the slot came back when the stream ended


def test_limit_windows_reset_at_utc_midnight_monday_and_the_first():
    from datetime import datetime

    from audiorouter.store.keys import EPOCH, next_reset, window_start
    t = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)  # a Saturday
    assert window_start("daily", t) == datetime(2026, 11, 21, tzinfo=UTC)
    assert window_start("weekly", t) == datetime(2026, 11, 16, tzinfo=UTC)  # Monday
    assert window_start("monthly", t) == datetime(2026, 11, 1, tzinfo=UTC)
    assert window_start(None, t) == EPOCH and next_reset(None, t) is None
    assert next_reset("daily", t) == datetime(2026, 11, 22, tzinfo=UTC)
    assert next_reset("weekly", t) == datetime(2026, 11, 23, tzinfo=UTC)
    assert next_reset("monthly", datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
