"""Every route fuzzed from the app's own OpenAPI schema (schemathesis), against a real gateway process whose
upstream is a fake: valid and invalid bodies, query strings and path parameters. Whatever comes in, the
answer is never a 5xx, its status is one the schema documents, and an error is the dialect's envelope
(OpenRouter's {"error": {"code", "message", "metadata"}} on /api/v1, OpenAI's {"error": {"message", "type",
"param", "code"}} on /v1).

Deterministic: Hypothesis is derandomized and the number of examples fixed, so every run sends the same
requests. A share of the generated audio bodies get real audio and a real model (chosen from the case's own
bytes, so still deterministic), so the fuzzer also reaches the router and the upstream with random options.
AUDIOROUTER_FUZZ_EXAMPLES sets the examples per operation (default 12); the audio routes get more in the
`slow` test below."""
from __future__ import annotations

import base64
import copy
import hashlib
import os
import tempfile
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from audiorouter.api.app import create_app
from audiorouter.config import Settings
from fakes.harness import start_gateway
from fakes.openai_fake import OpenAIFake
from fakes.runner import encode_audio, tone

ADMIN_KEY = "sk-ar-fuzz-admin-" + "4b1d9e7c2a5f8036e1c4b7a9d2f5e8c1"
EXAMPLES = int(os.environ.get("AUDIOROUTER_FUZZ_EXAMPLES", "12"))
WAV = encode_audio(tone(0.6, 16000), 16000, "wav")
AUDIO_PATHS = ("/audio/transcriptions", "/audio/translations", "/audio/speech")
STATUSES: Counter = Counter()  # (method, path, status) -> answers, over the module
SETTINGS = {"derandomize": True, "deadline": None, "database": None, "print_blob": True,
                "suppress_health_check": list(HealthCheck), "phases": [Phase.explicit, Phase.generate]}


@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY", "timeout_s": 10}}
    models = [
        {"id": "fuzz/stt", "name": "fuzzed transcription", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1",
             "capabilities": {"prompt": True, "translation": True, "word_timestamps": True}}]},
        {"id": "fuzz/tts", "name": "fuzzed speech", "kind": "speech", "voices": ["alloy", "nova"], "endpoints": [
            {"provider": "openai", "upstream_model": "tts-1", "capabilities": {"speed": True}}]},
    ]
    yield from start_gateway(tmp_path_factory.mktemp("fuzz"), {"providers": providers, "models": models},
                             OPENAI_API_KEY=fake.api_key, AUDIOROUTER_MANAGEMENT_KEY=ADMIN_KEY,
                             AUDIOROUTER_LOG_LEVEL="warning")


@pytest.fixture(scope="module")
def user_key(gw) -> str:
    r = httpx.post(gw.url + "/api/v1/keys", json={"name": "fuzz-user", "limit": 100},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def app_schema() -> dict:
    """The app's /openapi.json, built in-process at collection time (test_served_schema_is_the_same checks
    that the running server publishes exactly this)."""
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(_env_file=None, data_dir=d, preload=False, local_substitute=False)
        return create_app(settings).openapi()


APP_SCHEMA = app_schema()
schema = schemathesis.openapi.from_dict(copy.deepcopy(APP_SCHEMA))


def test_served_schema_is_the_same(gw):
    assert httpx.get(gw.url + "/openapi.json").json() == APP_SCHEMA


def _pick(case) -> int:
    """A number from the case's own content: the same case always makes the same choice."""
    return hashlib.sha256(repr((case.path, case.body)).encode()).digest()[0]


def with_real_audio(case) -> None:
    """Give about half of the audio bodies real audio and a real model, so they get past the parser."""
    path, body, n = case.path, case.body, _pick(case)
    if not path.endswith(AUDIO_PATHS) or not isinstance(body, dict) or n % 2:
        return
    if path.endswith("/speech"):
        body["model"] = "fuzz/tts"
        if not isinstance(body.get("input"), str) or not body["input"].strip():
            body["input"] = "hello there"
    elif case.media_type == "multipart/form-data":
        body["model"], body["file"] = "fuzz/stt", WAV
    else:
        body["model"] = "fuzz/stt"
        body["input_audio"] = {"data": base64.b64encode(WAV).decode(), "format": "wav"}


def check_envelope(response, path: str) -> None:
    if response.status_code < 400 or not path.startswith(("/api/", "/v1/")):
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    err = response.json()["error"]
    if path.startswith("/v1/"):
        assert set(err) == {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), err
    else:
        assert err["code"] == response.status_code and isinstance(err["message"], str) and err["message"], err
        assert isinstance(err.get("metadata"), (dict, type(None))), err


def run_case(case, gw, user_key: str) -> None:
    with_real_audio(case)
    management = case.path.startswith(("/api/v1/keys", "/api/v1/byok", "/api/v1/credits", "/api/v1/activity"))
    # a key the generator made up must not replace ours (the auth matrix is tested elsewhere)
    if case.headers:
        case.headers.pop("Authorization", None)
    auth = {"Authorization": f"Bearer {ADMIN_KEY if management else user_key}"}
    response = case.call(base_url=gw.url, headers=auth, timeout=60)
    STATUSES[(case.method, case.path, response.status_code)] += 1
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
                           headers=auth)
    check_envelope(response, case.path)


@schema.parametrize()
@settings(max_examples=EXAMPLES, **SETTINGS)
def test_every_route_answers_in_its_envelope(case, gw, user_key, fake):
    fake.violations.clear()
    run_case(case, gw, user_key)
    assert not fake.violations, fake.violations


@pytest.mark.slow
@schema.include(path_regex=r"/audio/(transcriptions|translations|speech)$").parametrize()
@settings(max_examples=10 * EXAMPLES, **SETTINGS)
def test_audio_routes_fuzzed_harder(case, gw, user_key, fake):
    fake.violations.clear()
    run_case(case, gw, user_key)
    assert not fake.violations, fake.violations


def test_fuzzing_reached_every_layer(fake):
    """The runs above got past the parser to the upstream and back (else they fuzzed only the 400 path)."""
    ok = {(m, p) for (m, p, st), n in STATUSES.items() if st in (200, 201)}
    for path in ("/api/v1/audio/transcriptions", "/v1/audio/transcriptions", "/v1/audio/translations",
                 "/api/v1/audio/speech", "/v1/audio/speech", "/api/v1/keys"):
        assert any(p == path for _, p in ok), (path, sorted(STATUSES.items()))
    assert sum(n for (_, _, st), n in STATUSES.items() if 400 <= st < 500) > 0
