"""Fallback chains under fault injection: a first provider failing in each way (429 + Retry-After, 500, 503,
timeout, connection refused, connection reset, malformed reply), retried with backoff and then replaced by a
second that succeeds; the same with allow_fallbacks=false; speech never retried once bytes flowed; and two
audiorouter processes, the first using the second as its openai_compatible upstream."""
from __future__ import annotations

import base64

import httpx
import pytest

from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import b64, gateway_env, parse_attempts, sha, write_catalog
from fakes.openai_fake import GroqFake, OpenAIFake
from fakes.openrouter_fake import OpenRouterFake
from fakes.runner import ALWAYS, free_port, probe

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"


@pytest.fixture(scope="module")
def fakes():
    f = {"first": OpenAIFake("sk-first").start(), "second": GroqFake("gsk-second").start(),
         "orouter": OpenRouterFake("sk-or-chain").start()}
    yield f
    for x in f.values():
        x.stop()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    providers = {
        "first": {"name": "First", "adapter": "openai", "base_url": fakes["first"].base_url, "api_key": "sk-first",
                  "timeout_s": 1.0},
        "second": {"name": "Second", "adapter": "groq", "base_url": fakes["second"].base_url,
                   "api_key": "gsk-second"},
        "orouter": {"name": "OpenRouter", "adapter": "openrouter", "base_url": fakes["orouter"].base_url,
                    "api_key": "sk-or-chain", "timeout_s": 1.0},
        "dead": {"name": "Dead", "adapter": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                 "api_key": "sk-dead"},
    }
    second = {"provider": "second", "upstream_model": "whisper-large-v3"}
    models = [
        # the first endpoint takes only mp3, so the (flac) input is converted: the converted upload must be
        # re-sent whole on every attempt
        {"id": "chain/stt", "name": "first, then second", "kind": "transcription", "endpoints": [
            {"provider": "first", "upstream_model": "whisper-1", "input_formats": ["mp3"]}, second]},
        {"id": "chain/refused", "name": "dead, then second", "kind": "transcription", "endpoints": [
            {"provider": "dead", "upstream_model": "whisper-1"}, second]},
        {"id": "chain/json", "name": "openrouter, then second", "kind": "transcription", "endpoints": [
            {"provider": "orouter", "upstream_model": "openai/whisper-1"}, second]},
        {"id": "chain/tts", "name": "first, then openrouter", "kind": "speech", "voices": ["alloy"], "endpoints": [
            {"provider": "first", "upstream_model": "tts-1", "output_formats": ["mp3", "pcm", "wav"]},
            {"provider": "orouter", "upstream_model": "openai/tts-1", "output_formats": ["mp3", "pcm"]}]},
    ]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    env = gateway_env(cat, tmp, AUDIOROUTER_RETRY_ATTEMPTS="2", AUDIOROUTER_RETRY_AFTER_MAX_S="2",
                      AUDIOROUTER_BREAKER_THRESHOLD="1000")
    s = ServerProcess(env=env, tmp=tmp).start()
    yield s
    s.stop()


@pytest.fixture
def client(gw, fakes):
    for f in fakes.values():
        f.clear()
    with httpx.Client(base_url=gw.url, timeout=60) as c:
        yield c
    for name, f in fakes.items():
        assert not f.violations, f"{name}: {f.violations}"


FAULTS = {
    # name: (inject into the first provider, the status an attempt records)
    "429": (lambda f: f.fail(429, "Rate limit reached", retry_after=1, times=ALWAYS), 429),
    "500": (lambda f: f.fail(500, "The server had an error", times=ALWAYS), 500),
    "503": (lambda f: f.fail(503, "The engine is currently overloaded", times=ALWAYS), 503),
    "timeout": (lambda f: f.timeout(3.0, times=ALWAYS), 504),
    "reset": (lambda f: f.drop(times=ALWAYS), 502),
    "malformed": (lambda f: f.malformed(times=ALWAYS), 502),
    "refused": (None, 502),
}
# what the client gets when no fallback is allowed
ALONE = {"429": 429, "500": 502, "503": 503, "timeout": 504, "reset": 502, "malformed": 502, "refused": 502}


def stt(client, model, path="/api/v1/audio/transcriptions", **extra):
    return client.post(path, json={"model": model, "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"},
                                   **extra})


def setup_fault(fakes, kind) -> tuple[str, str]:
    inject, _ = FAULTS[kind]
    if inject is None:
        return "chain/refused", "dead"
    inject(fakes["first"])
    return "chain/stt", "first"


@pytest.mark.parametrize("kind", list(FAULTS))
def test_first_fails_second_serves(client, fakes, kind):
    model, first = setup_fault(fakes, kind)
    r = stt(client, model)
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "second"
    assert r.json()["text"] == fakes["second"].calls[0].info["heard"].text
    status = FAULTS[kind][1]
    attempts = parse_attempts(r.headers["x-route-attempts"])
    assert attempts == [(first, status), (first, status), ("second", 200)]  # retried once, then fell back
    if first == "first":
        uploads = [c.files["file"] for c in fakes["first"].calls]
        assert len(uploads) == 2 and uploads[0] == uploads[1]  # the same, whole, converted upload each time
        assert uploads[0][0] == "audio.mp3" and abs(probe(uploads[0][2]).duration - 11.0) < 0.1
    assert sha(fakes["second"].calls[0].files["file"][2]) == sha(JFK.read_bytes())


@pytest.mark.parametrize("dialect", ["/api/v1/audio/transcriptions", "/v1/audio/transcriptions"])
@pytest.mark.parametrize("kind", list(FAULTS))
def test_without_fallbacks_the_first_error_is_returned(client, fakes, kind, dialect):
    model, first = setup_fault(fakes, kind)
    r = stt(client, model, path=dialect, provider={"allow_fallbacks": False})
    assert r.status_code == ALONE[kind], r.text
    assert fakes["second"].calls == []
    assert [p for p, _ in parse_attempts(r.headers["x-route-attempts"])] == [first, first]
    err = r.json()["error"]
    if dialect.startswith("/v1/"):
        assert set(err) == {"message", "type", "param", "code"}
    else:
        assert err["code"] == ALONE[kind]
        assert [a["provider"] for a in err["metadata"]["attempts"]] == [first, first]
        assert err["metadata"]["provider_name"] == first
    if kind == "429":
        assert r.headers["retry-after"] == "1"


def test_transient_failure_is_retried_on_the_same_provider(client, fakes):
    fakes["first"].fail(500, "blip", times=1)
    r = stt(client, "chain/stt")
    assert r.status_code == 200 and r.headers["x-provider"] == "first"
    assert parse_attempts(r.headers["x-route-attempts"]) == [("first", 500), ("first", 200)]


def test_long_retry_after_moves_on_at_once(client, fakes):
    fakes["first"].fail(429, "Rate limit reached, try again in 30s", retry_after=30, times=ALWAYS)
    r = stt(client, "chain/stt")
    assert r.status_code == 200
    assert parse_attempts(r.headers["x-route-attempts"]) == [("first", 429), ("second", 200)]


def test_json_upstream_gets_the_full_audio_on_every_attempt(client, fakes):
    fakes["orouter"].fail(502, "Provider returned error", times=ALWAYS)
    r = stt(client, "chain/json")
    assert r.status_code == 200 and r.headers["x-provider"] == "second"
    calls = fakes["orouter"].calls
    assert len(calls) == 2
    for c in calls:
        assert sha(base64.b64decode(c.json["input_audio"]["data"])) == sha(JFK.read_bytes())


def test_everything_fails(client, fakes):
    fakes["first"].fail(503, "overloaded", times=ALWAYS)
    fakes["second"].fail(503, "over capacity", times=ALWAYS)
    r = stt(client, "chain/stt")
    assert r.status_code == 503
    meta = r.json()["error"]["metadata"]
    assert [(a["provider"], a["status"]) for a in meta["attempts"]] == [("first", 503)] * 2 + [("second", 503)] * 2
    assert all(a["latency_ms"] >= 0 and a["error"] for a in meta["attempts"])
    fakes["second"].clear()
    fakes["second"].fail(500, "boom", times=ALWAYS)
    r = stt(client, "chain/stt", path="/v1/audio/transcriptions")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "all_providers_failed" and "x-route-attempts" in r.headers


def test_speech_falls_back_before_any_byte(client, fakes):
    body = {"model": "chain/tts", "input": "Testing the fallback voice.", "voice": "alloy"}
    fakes["first"].fail(500, "tts down", times=ALWAYS)
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200 and r.headers["x-provider"] == "orouter"
    assert r.content == fakes["orouter"].calls[0].reply_bytes
    assert parse_attempts(r.headers["x-route-attempts"]) == [("first", 500), ("first", 500), ("orouter", 200)]
    fakes["first"].clear()
    fakes["first"].malformed(times=ALWAYS)  # 200 with a JSON body instead of audio
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200 and r.headers["x-provider"] == "orouter"


def test_speech_is_not_retried_once_bytes_flowed(client, fakes):
    fakes["first"].cut_stream(after_chunks=1, times=ALWAYS)
    got = b""
    with pytest.raises(httpx.HTTPError):
        with client.stream("POST", "/v1/audio/speech",
                           json={"model": "chain/tts", "input": "A sentence long enough to stream.", "voice": "alloy"}) as r:
            assert r.status_code == 200 and r.headers["x-provider"] == "first"
            for chunk in r.iter_bytes():
                got += chunk
    sent = fakes["first"].calls[0].reply_bytes
    assert got and sent.startswith(got) and len(got) < len(sent)
    assert len(fakes["first"].calls) == 1 and fakes["orouter"].calls == []


# ---- two audiorouter processes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    t2 = tmp_path_factory.mktemp("node2")
    node2 = ServerProcess(env={"AUDIOROUTER_DATA_DIR": str(t2 / "data"), "AUDIOROUTER_CACHE_TTL_S": "0",
                               "AUDIOROUTER_WHISPER_BEAM_SIZE": "1"}, tmp=t2).start(timeout=300)
    t1 = tmp_path_factory.mktemp("node1")
    providers = {"node2": {"name": "Another audiorouter", "adapter": "openai_compatible",
                           "base_url": node2.url + "/v1"}}
    models = [
        {"id": "chain/node-stt", "name": "Whisper via node 2", "kind": "transcription", "endpoints": [
            {"provider": "node2", "upstream_model": "local/whisper-base",
             "capabilities": {"translation": True, "word_timestamps": True, "prompt": True}}]},
        {"id": "chain/node-tts", "name": "hibari via node 2", "kind": "speech", "voices": ["heart"], "endpoints": [
            {"provider": "node2", "upstream_model": "local/hibari",
             "output_formats": ["pcm", "mp3", "wav", "flac", "opus", "aac"], "capabilities": {"speed": True}}]},
    ]
    cat = write_catalog(t1 / "catalog.yaml", providers, models)
    node1 = ServerProcess(env=gateway_env(cat, t1), tmp=t1).start()
    yield node1, node2
    node1.stop()
    node2.stop()


def test_two_nodes_transcription(two_nodes):
    node1, _ = two_nodes
    with httpx.Client(base_url=node1.url, timeout=120) as c:
        r = stt(c, "chain/node-stt", response_format="verbose_json", timestamp_granularities=["word"])
        assert r.status_code == 200, r.text
        assert r.headers["x-provider"] == "node2"
        body = r.json()
        assert "ask not what your country can do for you" in body["text"].lower()
        assert body["language"] == "en" and body["segments"] and body["words"]
        assert abs(body["duration"] - 11.0) < 0.1
        r = c.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())},
                   data={"model": "chain/node-stt", "response_format": "srt"})
        assert r.status_code == 200 and "-->" in r.text and "country" in r.text.lower()


def test_two_nodes_speech(two_nodes):
    node1, _ = two_nodes
    with httpx.Client(base_url=node1.url, timeout=120) as c:
        r = c.post("/v1/audio/speech", json={"model": "chain/node-tts", "input": "Hello from the second node.",
                                             "voice": "heart", "response_format": "mp3"})
        assert r.status_code == 200, r.text
        assert r.headers["x-provider"] == "node2" and r.headers["content-type"] == "audio/mpeg"
        assert probe(r.content).duration > 1.0
        r = c.post("/api/v1/audio/speech", json={"model": "chain/node-tts", "input": "And in raw PCM.",
                                                 "voice": "heart"})
        assert r.status_code == 200 and "rate=24000" in r.headers["content-type"]
        assert len(r.content) > 24000  # more than half a second of 16-bit audio
