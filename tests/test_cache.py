"""Transcript cache (cache.py): identical audio + model + output-changing parameters are served from the
cache (X-Cache: HIT, usage.cost 0, no upstream call), whatever the response format; a change of audio or of
a parameter that changes the output is a MISS; Cache-Control: no-cache / no-store and the body flag
"cache": false bypass it; entries expire after AUDIOROUTER_CACHE_TTL_S; Redis works as the store when
AUDIOROUTER_REDIS_URL is set. Tested against a priced upstream (a fake OpenAI), so a hit visibly costs
nothing and reaches no provider."""
from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time

import httpx
import openai
import pytest

from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import b64, gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake
from test_keys_support import unavailable

JFK = (DEV_AUDIO / "jfk_inaugural_excerpt.flac").read_bytes()
LIBRI = (DEV_AUDIO / "librispeech_test-other_1688-142285-0002.flac").read_bytes()
PRICE_PER_MINUTE = 0.006


def start_gateway(tmp, fake, **extra) -> ServerProcess:
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [{"id": "openai/whisper-1", "name": "Whisper", "kind": "transcription", "endpoints": [
        {"provider": "openai", "upstream_model": "whisper-1", "pricing": {"per_minute": PRICE_PER_MINUTE},
         "capabilities": {"translation": True, "word_timestamps": True, "prompt": True}}]}]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    settings = {"AUDIOROUTER_RETRY_ATTEMPTS": "1", "AUDIOROUTER_CACHE_TTL_S": "3600",
                "AUDIOROUTER_CACHE_PATH": str(tmp / "transcripts.db"), **extra}
    env = gateway_env(cat, tmp, OPENAI_API_KEY=fake.api_key, **settings)
    return ServerProcess(env=env, tmp=tmp).start()


@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    s = start_gateway(tmp_path_factory.mktemp("cache"), fake)
    yield s
    s.stop()


@pytest.fixture
def client(gw, fake):
    fake.clear()
    with httpx.Client(base_url=gw.url, timeout=60) as c:
        yield c
    assert not fake.violations, fake.violations


def stt(client, audio=JFK, headers=None, **extra):
    """A transcription that must succeed (every request in this suite does)."""
    body = {"model": "openai/whisper-1", "input_audio": {"data": b64(audio), "format": "flac"}, **extra}
    r = client.post("/api/v1/audio/transcriptions", json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r


def upstream_calls(fake) -> int:
    return sum(1 for c in fake.calls if c.path.endswith("/audio/transcriptions"))


def test_hit_after_miss_is_free_and_served_without_upstream(client, fake):
    first = stt(client, prompt="hit-miss")
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert first.json()["usage"]["cost"] == pytest.approx(PRICE_PER_MINUTE * 11.0 / 60)
    second = stt(client, prompt="hit-miss")
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert second.json()["text"] == first.json()["text"]
    assert second.json()["usage"]["cost"] == 0
    assert second.json()["usage"]["seconds"] == first.json()["usage"]["seconds"]
    assert upstream_calls(fake) == 1
    assert second.headers["x-model"] == "openai/whisper-1" and second.headers["x-provider"] == "openai"
    # the ledger records the hit at 0 as well
    for r, cost in ((first, first.json()["usage"]["cost"]), (second, 0)):
        g = client.get("/api/v1/generation", params={"id": r.headers["x-generation-id"]})
        assert g.status_code == 200, g.text
        assert g.json()["data"]["total_cost"] == pytest.approx(cost), g.json()


def test_entries_are_scoped_per_key(fake, tmp_path_factory):
    """Two API keys sending the same audio never share a cached transcript: the second key's request is a
    MISS, reaches the upstream and is billed (ledger and usage); each key then hits its own entry."""
    mgmt = "sk-ar-test-mgmt-" + secrets.token_hex(24)
    s = start_gateway(tmp_path_factory.mktemp("cache-keys"), fake, AUDIOROUTER_MANAGEMENT_KEY=mgmt)
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            keys = []
            for name in ("alice", "bob"):
                r = c.post("/api/v1/keys", json={"name": name}, headers={"Authorization": f"Bearer {mgmt}"})
                assert r.status_code == 201, r.text
                keys.append({"Authorization": f"Bearer {r.json()['key']}"})
            alice, bob = keys
            fake.clear()
            seen = []
            for who, want in ((alice, "MISS"), (alice, "HIT"), (bob, "MISS"), (bob, "HIT"), (alice, "HIT")):
                r = stt(c, headers=who, prompt="per-key")
                assert r.headers["x-cache"] == want, (len(seen), r.headers["x-cache"])
                seen.append(r)
            assert upstream_calls(fake) == 2
            full = PRICE_PER_MINUTE * 11.0 / 60
            for r, who, cost in zip(seen, (alice, alice, bob, bob, alice), (full, 0, full, 0, 0)):
                assert r.json()["usage"]["cost"] == pytest.approx(cost)
                g = c.get("/api/v1/generation", params={"id": r.headers["x-generation-id"]}, headers=who)
                assert g.status_code == 200, g.text
                assert g.json()["data"]["total_cost"] == pytest.approx(cost), g.json()
            # and a key cannot read the other's generation
            g = c.get("/api/v1/generation", params={"id": seen[2].headers["x-generation-id"]}, headers=alice)
            assert g.status_code == 404, g.text
    finally:
        s.stop()


def test_response_format_shares_the_entry(client, fake):
    base = stt(client, prompt="formats", response_format="verbose_json")
    assert base.headers["x-cache"] == "MISS"
    for fmt in ("json", "text", "srt", "vtt"):
        r = stt(client, prompt="formats", response_format=fmt)
        assert r.status_code == 200 and r.headers["x-cache"] == "HIT", (fmt, r.headers.get("x-cache"))
    assert upstream_calls(fake) == 1


@pytest.mark.parametrize("change", [{"language": "en"}, {"prompt": "another prompt"}, {"temperature": 0.3},
                                    {"timestamp_granularities": ["word"], "response_format": "verbose_json"},
                                    {"include": ["logprobs"]}, {"chunking_strategy": "auto"}])
def test_output_changing_parameters_miss(client, fake, change):
    stt(client, prompt="params")
    fake.clear()
    params = {"prompt": "params", **change}
    r = stt(client, **params)
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS", change
    assert upstream_calls(fake) == 1


def test_different_audio_misses(client, fake):
    stt(client, prompt="audio")
    r = stt(client, audio=LIBRI, prompt="audio")
    assert r.headers["x-cache"] == "MISS"
    assert upstream_calls(fake) == 2


def test_translation_is_not_a_transcription_hit(client, fake):
    stt(client, prompt="task")
    r = client.post("/api/v1/audio/translations", json={"model": "openai/whisper-1", "prompt": "task",
                                                        "input_audio": {"data": b64(JFK), "format": "flac"}})
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS"


def test_bypass_header_and_body_flag(client, fake):
    stt(client, prompt="bypass")
    fake.clear()
    r = stt(client, prompt="bypass", headers={"Cache-Control": "no-cache"})
    assert r.headers["x-cache"] == "BYPASS" and r.json()["usage"]["cost"] > 0
    r = stt(client, prompt="bypass", cache=False)
    assert r.headers["x-cache"] == "BYPASS" and r.json()["usage"]["cost"] > 0
    assert upstream_calls(fake) == 2
    # no-store and cache:false do not write: new audio seen only that way is still a miss afterwards
    stt(client, audio=LIBRI, prompt="bypass-store", headers={"Cache-Control": "no-store"})
    stt(client, audio=LIBRI, prompt="bypass-store", cache=False)
    assert stt(client, audio=LIBRI, prompt="bypass-store").headers["x-cache"] == "MISS"
    # no-cache refreshes the entry: the next plain request hits
    stt(client, audio=LIBRI, prompt="refresh", headers={"Cache-Control": "no-cache"})
    assert stt(client, audio=LIBRI, prompt="refresh").headers["x-cache"] == "HIT"


def test_multipart_and_sdk(gw, fake):
    fake.clear()
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", max_retries=0)
    a = sdk.audio.transcriptions.with_raw_response.create(model="openai/whisper-1", prompt="sdk",
                                                          file=("jfk.flac", JFK, "audio/flac"))
    b = sdk.audio.transcriptions.with_raw_response.create(model="openai/whisper-1", prompt="sdk",
                                                          file=("other-name.flac", JFK, "audio/flac"))
    assert a.headers["x-cache"] == "MISS" and b.headers["x-cache"] == "HIT"
    assert b.parse().text == a.parse().text
    c = sdk.audio.transcriptions.with_raw_response.create(model="openai/whisper-1", prompt="sdk",
                                                          file=("jfk.flac", JFK, "audio/flac"),
                                                          extra_body={"cache": "false"})
    assert c.headers["x-cache"] == "BYPASS"
    assert upstream_calls(fake) == 2


def test_stream_served_from_cache(client, fake):
    stt(client, prompt="stream")
    with client.stream("POST", "/api/v1/audio/transcriptions", json={
            "model": "openai/whisper-1", "prompt": "stream", "stream": True,
            "input_audio": {"data": b64(JFK), "format": "flac"}}) as r:
        assert r.headers["x-cache"] == "HIT"
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    done = httpx.Response(200, content=events[-1][6:]).json()
    assert done["type"] == "transcript.text.done" and done["usage"]["cost"] == 0
    assert upstream_calls(fake) == 1


def test_ttl_expiry(fake, tmp_path_factory):
    s = start_gateway(tmp_path_factory.mktemp("cache-ttl"), fake, AUDIOROUTER_CACHE_TTL_S="1")
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert stt(c, prompt="ttl").headers["x-cache"] == "MISS"
            assert stt(c, prompt="ttl").headers["x-cache"] == "HIT"
            time.sleep(1.5)
            assert stt(c, prompt="ttl").headers["x-cache"] == "MISS"
    finally:
        s.stop()


def test_disabled_cache_has_no_header(fake, tmp_path_factory):
    s = start_gateway(tmp_path_factory.mktemp("cache-off"), fake, AUDIOROUTER_CACHE_TTL_S="0")
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert "x-cache" not in stt(c, prompt="off").headers
            assert "x-cache" not in stt(c, prompt="off").headers
    finally:
        s.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed")  # a skip, but a failure under CI=true
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_redis_backend(fake, redis_server, tmp_path_factory):
    import redis
    s = start_gateway(tmp_path_factory.mktemp("cache-redis"), fake, AUDIOROUTER_REDIS_URL=redis_server,
                      AUDIOROUTER_CACHE_TTL_S="600")
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert stt(c, prompt="redis").headers["x-cache"] == "MISS"
            assert stt(c, prompt="redis").headers["x-cache"] == "HIT"
        r = redis.Redis.from_url(redis_server)
        keys = r.keys("audiorouter:stt:*")
        assert len(keys) == 1 and 0 < r.ttl(keys[0]) <= 600
        assert not (tmp_path_factory.getbasetemp() / "cache-redis0" / "transcripts.db").exists()
    finally:
        s.stop()
