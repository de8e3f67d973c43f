"""Routing for audio: the request's `provider` object (order, only, ignore, allow_fallbacks, sort, max_price,
data_collection, zdr, require_parameters), `models` fallbacks, unsupported parameters, the circuit breaker
and the overall deadline - against fake OpenAI / Groq upstreams."""
from __future__ import annotations

import time

import httpx
import pytest
from openrouter import operations

from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import b64, gateway_env, parse_attempts, write_catalog
from fakes.openai_fake import GroqFake, OpenAIFake
from fakes.runner import ALWAYS

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # 11.0 s


@pytest.fixture(scope="module")
def fakes():
    # Keys end in random hex as real ones do: the scrubber removes a key's tail at the start of upstream text,
    # so a key ending in its provider's name would scrub "alpha is down" into "*** is down".
    f = {"alpha": OpenAIFake("sk-alpha-4f1c9e27").start(), "beta": OpenAIFake("sk-beta-0b8d63a5").start(),
         "gamma": GroqFake("gsk-gamma-c27e904b").start()}
    yield f
    for x in f.values():
        x.stop()


def catalog(fakes, path, alpha_timeout: float | None = None):
    providers = {
        "alpha": {"name": "Alpha", "adapter": "openai", "base_url": fakes["alpha"].base_url, "api_key": "sk-alpha-4f1c9e27"},
        "beta": {"name": "Beta", "adapter": "openai", "base_url": fakes["beta"].base_url, "api_key": "sk-beta-0b8d63a5"},
        "gamma": {"name": "Gamma", "adapter": "groq", "base_url": fakes["gamma"].base_url, "api_key": "gsk-gamma-c27e904b"},
    }
    if alpha_timeout:
        providers["alpha"]["timeout_s"] = alpha_timeout
    alpha_stt = {"provider": "alpha", "upstream_model": "whisper-1", "pricing": {"per_second": 0.0001},
                 "data_collection": "allow", "capabilities": {"prompt": True}}
    beta_stt = {"provider": "beta", "upstream_model": "whisper-1", "pricing": {"per_second": 0.00005}, "zdr": True,
                "capabilities": {"prompt": True}}
    gamma_stt = {"provider": "gamma", "upstream_model": "whisper-large-v3", "pricing": {"per_second": 0.00017},
                 "capabilities": {"prompt": False}}
    tts = {"kind": "speech", "voices": ["alloy", "nova"]}
    models = [
        {"id": "route/stt", "name": "three providers", "kind": "transcription",
         "endpoints": [alpha_stt, beta_stt, gamma_stt]},
        {"id": "route/alpha-only", "name": "alpha", "kind": "transcription", "endpoints": [alpha_stt]},
        {"id": "route/gamma-only", "name": "gamma", "kind": "transcription", "endpoints": [gamma_stt]},
        {"id": "route/tts", "name": "two voices", **tts, "endpoints": [
            {"provider": "alpha", "upstream_model": "tts-1", "pricing": {"per_million_characters": 15.0},
             "output_formats": ["mp3", "pcm"]},
            {"provider": "beta", "upstream_model": "tts-1", "pricing": {"per_million_characters": 30.0},
             "output_formats": ["mp3", "pcm"]}]},
    ]
    return write_catalog(path, providers, models)


def start(fakes, tmp_path_factory, name, alpha_timeout=None, **env):
    tmp = tmp_path_factory.mktemp(name)
    cat = catalog(fakes, tmp / "catalog.yaml", alpha_timeout)
    return ServerProcess(env=gateway_env(cat, tmp, **env), tmp=tmp).start()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    s = start(fakes, tmp_path_factory, "routing", AUDIOROUTER_RETRY_ATTEMPTS="1", AUDIOROUTER_BREAKER_THRESHOLD="1000")
    yield s
    s.stop()


def _client(server, fakes):
    for f in fakes.values():
        f.clear()
        f.delay_s = 0.0
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
    for name, f in fakes.items():
        assert not f.violations, f"{name}: {f.violations}"


@pytest.fixture
def client(gw, fakes):
    yield from _client(gw, fakes)


def stt(client, model="route/stt", path="/api/v1/audio/transcriptions", **extra):
    return client.post(path, json={"model": model, "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"},
                                   **extra})


def served(r) -> str:
    assert r.status_code == 200, r.text
    return r.headers["x-provider"]


def n_calls(fakes) -> dict[str, int]:
    return {k: len(f.calls) for k, f in fakes.items()}


def test_default_is_catalog_order(client, fakes):
    assert served(stt(client)) == "alpha"
    assert n_calls(fakes) == {"alpha": 1, "beta": 0, "gamma": 0}


def test_order(client, fakes):
    assert served(stt(client, provider={"order": ["gamma", "beta"]})) == "gamma"
    assert served(stt(client, provider={"order": ["beta"]})) == "beta"
    assert n_calls(fakes) == {"alpha": 0, "beta": 1, "gamma": 1}


def test_only_and_ignore(client, fakes):
    assert served(stt(client, provider={"only": ["gamma"]})) == "gamma"
    assert served(stt(client, provider={"ignore": ["alpha"]})) == "beta"
    r = stt(client, provider={"only": ["nobody"]})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "provider.only"
    r = stt(client, path="/v1/audio/transcriptions", provider={"ignore": ["alpha", "beta", "gamma"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.ignore"


def test_sort_by_price(client, fakes):
    assert served(stt(client, provider={"sort": "price"})) == "beta"
    assert served(stt(client, provider={"sort": {"by": "price"}})) == "beta"
    # an explicit order outranks the sort
    assert served(stt(client, provider={"sort": "price", "order": ["gamma"]})) == "gamma"
    r = client.post("/api/v1/audio/speech", json={"model": "route/tts", "input": "Hi.", "voice": "nova",
                                                  "provider": {"sort": "price", "order": []}})
    assert served(r) == "alpha"


def test_max_price(client, fakes):
    # per second of audio: alpha 0.0001, beta 0.00005, gamma 0.00017
    assert served(stt(client, provider={"max_price": {"audio": 0.00006}})) == "beta"
    # the whole request (11 s): alpha 0.0011, beta 0.00055
    assert served(stt(client, provider={"max_price": {"total": 0.0008}, "order": ["alpha"]})) == "beta"
    r = stt(client, provider={"max_price": {"audio": 0.00001}})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "provider.max_price"
    r = stt(client, path="/v1/audio/transcriptions", provider={"max_price": {"bogus": 1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.max_price.bogus"
    # speech, per character: alpha 15e-6, beta 30e-6
    r = client.post("/api/v1/audio/speech", json={"model": "route/tts", "input": "Hi.", "voice": "nova",
                                                  "provider": {"order": ["beta"], "max_price": {"prompt": 0.00002}}})
    assert served(r) == "alpha"


def test_data_policy(client, fakes):
    assert served(stt(client, provider={"data_collection": "deny"})) == "beta"  # alpha collects data
    assert served(stt(client, provider={"zdr": True, "order": ["gamma"]})) == "beta"  # only beta is ZDR
    r = stt(client, provider={"zdr": True, "only": ["alpha"]})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "provider.zdr"
    assert n_calls(fakes)["alpha"] == 0


def test_require_parameters(client, fakes):
    r = stt(client, prompt="Kennedy, inaugural", provider={"only": ["gamma"]})
    assert served(r) == "gamma" and r.headers["x-ignored-parameters"] == "prompt"
    assert "prompt" not in fakes["gamma"].calls[0].form
    r = stt(client, prompt="Kennedy", provider={"only": ["gamma"], "require_parameters": True})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["metadata"]["param"] == "prompt" and "route/stt" in err["message"]
    r = stt(client, prompt="Kennedy", provider={"order": ["gamma"], "require_parameters": True})
    assert served(r) == "alpha" and fakes["alpha"].calls[0].f1("prompt") == "Kennedy"


def test_unsupported_parameter_is_a_400_naming_it_and_the_model(client, fakes):
    r = stt(client, diarize=True)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["metadata"]["param"] == "diarize" and "route/stt" in err["message"]
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", JFK.read_bytes())},
                    data={"model": "route/stt", "keyterms": "Kennedy"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "keyterms"
    r = client.post("/v1/audio/speech", json={"model": "route/tts", "input": "Hi.", "voice": "nova", "speed": 1.5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "speed"
    assert n_calls(fakes) == {"alpha": 0, "beta": 0, "gamma": 0}


def test_allow_fallbacks(client, fakes):
    fakes["alpha"].fail(500, "alpha is down", times=ALWAYS)
    r = stt(client)
    assert served(r) == "beta"
    assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 500), ("beta", 200)]
    r = stt(client, provider={"allow_fallbacks": False})
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["metadata"]["provider_name"] == "alpha" and "alpha is down" in err["message"]
    assert [a["provider"] for a in err["metadata"]["attempts"]] == ["alpha"]
    # with an order and no fallbacks, only the listed providers are tried
    r = stt(client, provider={"allow_fallbacks": False, "order": ["alpha", "gamma"]})
    assert served(r) == "gamma"
    assert n_calls(fakes)["beta"] == 1


def test_model_fallbacks(client, fakes):
    fakes["alpha"].fail(503, "alpha is overloaded", times=ALWAYS)
    r = stt(client, model="route/alpha-only", models=["route/alpha-only", "route/gamma-only"])
    assert served(r) == "gamma" and r.headers["x-model"] == "route/gamma-only"
    assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 503), ("gamma", 200)]
    r = stt(client, model="route/alpha-only", models=["route/nope"])
    assert r.status_code == 404 and r.json()["error"]["metadata"]["param"] == "models[0]"


def test_speech_fallback_and_order(client, fakes):
    r = client.post("/v1/audio/speech", json={"model": "route/tts", "input": "Hello.", "voice": "nova",
                                              "provider": {"order": ["beta"]}})
    assert served(r) == "beta" and r.content == fakes["beta"].calls[0].reply_bytes
    fakes["beta"].fail(500, "beta speech down", times=ALWAYS)
    r = client.post("/v1/audio/speech", json={"model": "route/tts", "input": "Hello.", "voice": "nova",
                                              "provider": {"order": ["beta"]}})
    assert served(r) == "alpha" and r.content == fakes["alpha"].calls[0].reply_bytes
    assert parse_attempts(r.headers["x-route-attempts"]) == [("beta", 500), ("alpha", 200)]


def test_sort_by_measured_latency_and_throughput(client, fakes):
    fakes["alpha"].delay_s = 0.5
    for _ in range(2):
        served(stt(client, provider={"only": ["alpha"]}))
        served(stt(client, provider={"only": ["beta"]}))
    fakes["alpha"].clear()
    fakes["beta"].clear()
    assert served(stt(client, provider={"sort": "latency", "only": ["alpha", "beta"]})) == "beta"
    assert served(stt(client, provider={"sort": "throughput", "only": ["alpha", "beta"]})) == "beta"
    # history moves: beta becomes the slow one
    fakes["alpha"].delay_s, fakes["beta"].delay_s = 0.0, 1.2
    for _ in range(4):
        served(stt(client, provider={"only": ["beta"]}))
        served(stt(client, provider={"only": ["alpha"]}))
    assert served(stt(client, provider={"sort": "latency", "only": ["alpha", "beta"]})) == "alpha"
    body = client.get("/api/v1/models/route/stt/endpoints").json()
    # with measurements in it, the answer still parses with the OpenRouter SDK's own response model
    parsed = operations.ListEndpointsResponse.model_validate(body)
    assert {e.tag for e in parsed.data.endpoints} == {"alpha", "beta", "gamma"}
    eps = {e["tag"]: e for e in body["data"]["endpoints"]}
    assert eps["beta"]["latency_ewma_ms"] > eps["alpha"]["latency_ewma_ms"] > 0
    assert eps["alpha"]["throughput_ewma"] > eps["beta"]["throughput_ewma"] > 0
    assert 0 < eps["alpha"]["uptime_last_30m"] <= 1 and eps["alpha"]["circuit"] == "closed"


# ---- circuit breaker ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw_breaker(fakes, tmp_path_factory):
    s = start(fakes, tmp_path_factory, "breaker", AUDIOROUTER_RETRY_ATTEMPTS="1", AUDIOROUTER_BREAKER_THRESHOLD="2",
              AUDIOROUTER_BREAKER_COOLDOWN_S="1.0")
    yield s
    s.stop()


def test_circuit_breaker_skips_then_probes(gw_breaker, fakes):
    for c in _client(gw_breaker, fakes):
        fakes["alpha"].fail(500, "alpha is down", times=ALWAYS)
        for _ in range(2):  # two consecutive failures open alpha's circuit
            r = stt(c)
            assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 500), ("beta", 200)]
        r = stt(c)
        assert served(r) == "beta" and parse_attempts(r.headers["x-route-attempts"]) == [("beta", 200)]
        assert len(fakes["alpha"].calls) == 2  # skipped, not called
        # with only alpha allowed and its circuit open: a fast 503 with Retry-After
        r = stt(c, provider={"only": ["alpha"]})
        assert r.status_code == 503 and "retry-after" in r.headers
        assert r.json()["error"]["metadata"]["type"] == "circuit_open"
        time.sleep(1.2)  # cool-down over: one probe goes to alpha, fails, and the circuit reopens
        r = stt(c)
        assert parse_attempts(r.headers["x-route-attempts"]) == [("alpha", 500), ("beta", 200)]
        r = stt(c)
        assert parse_attempts(r.headers["x-route-attempts"]) == [("beta", 200)]
        fakes["alpha"].clear()  # alpha recovers
        time.sleep(1.2)
        r = stt(c)
        assert served(r) == "alpha"  # the probe succeeded: the circuit is closed again
        assert served(stt(c)) == "alpha"


# ---- deadline ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw_deadline(fakes, tmp_path_factory):
    s = start(fakes, tmp_path_factory, "deadline", alpha_timeout=1.0, AUDIOROUTER_RETRY_ATTEMPTS="5",
              AUDIOROUTER_REQUEST_DEADLINE_S="2.5", AUDIOROUTER_BREAKER_THRESHOLD="1000")
    yield s
    s.stop()


def test_overall_deadline_bounds_retries(gw_deadline, fakes):
    for c in _client(gw_deadline, fakes):
        fakes["alpha"].timeout(4.0, times=ALWAYS)
        r = stt(c, model="route/alpha-only")
        assert r.status_code == 504, r.text
        attempts = r.json()["error"]["metadata"]["attempts"]
        # 1 s per attempt within a 2.5 s budget: at most 3 attempts, not the 5 allowed
        assert 2 <= len(attempts) <= 3 and all(a["status"] == 504 for a in attempts)
