"""The model catalog over HTTP: GET /api/v1/models and /v1/models in OpenRouter's shape (checked field by field
and by parsing with the official OpenRouter SDK's response models), the output_modalities filter, one model,
its endpoints, and the voices of speech models."""
from __future__ import annotations

import re

import httpx
import pytest
from openrouter import components, operations

from conftest import ServerProcess

MODEL_FIELDS = {"id", "canonical_slug", "name", "created", "description", "context_length", "architecture",
                "pricing", "top_provider", "per_request_limits", "supported_parameters", "supported_voices",
                "default_parameters", "links"}
ID = re.compile(r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$")


def _models(client: httpx.Client, path: str = "/api/v1/models", **params) -> list[dict]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _price(v: str) -> float:
    assert isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?(e-?\d+)?", v), v
    return float(v)


# ---- list ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/models", "/v1/models"])
def test_model_fields(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    models = body["data"]
    assert len(models) >= 10
    ids = [m["id"] for m in models]
    assert len(ids) == len(set(ids))
    for m in models:
        assert set(m) >= MODEL_FIELDS, MODEL_FIELDS - set(m)
        assert ID.match(m["id"]), m["id"]
        assert m["canonical_slug"] == m["id"]
        assert isinstance(m["name"], str) and m["name"]
        assert isinstance(m["created"], int) and m["created"] > 1_600_000_000
        assert isinstance(m["description"], str) and m["description"]
        arch = m["architecture"]
        kind = arch["output_modalities"]
        assert kind in (["transcription"], ["speech"], ["text"], ["text", "audio"]), kind
        if "text" in kind:  # chat models (api/chat.py): text out, and audio where they speak
            assert arch["input_modalities"][0] == "text" and set(arch["input_modalities"]) <= {"text", "audio"}
            assert {"messages", "stream", "provider"} <= set(m["supported_parameters"])
            assert ("modalities" in m["supported_parameters"]) == ("audio" in kind)
        elif kind == ["transcription"]:
            assert arch["input_modalities"] == ["audio"] and arch["modality"] == "audio->text"
            assert m["supported_voices"] is None
            assert {"language", "response_format"} <= set(m["supported_parameters"])
        else:
            assert arch["input_modalities"] == ["text"] and arch["modality"] == "text->audio"
            assert isinstance(m["supported_voices"], list) and m["supported_voices"]
            assert all(isinstance(v, str) and v for v in m["supported_voices"])
            assert {"voice", "response_format"} <= set(m["supported_parameters"])
        assert all(isinstance(p, str) for p in m["supported_parameters"])
        for key in ("prompt", "completion"):
            assert _price(m["pricing"][key]) >= 0
        tp = m["top_provider"]
        assert isinstance(tp["is_moderated"], bool)
        assert "context_length" in tp and "max_completion_tokens" in tp
        prl = m["per_request_limits"]
        assert prl is None or ({"prompt_tokens", "completion_tokens"} <= set(prl))
        assert m["links"]["details"] == f"/api/v1/models/{m['id']}/endpoints"
        if path == "/v1/models":
            assert m["object"] == "model" and m["owned_by"] == m["id"].split("/")[0]
    if path == "/v1/models":
        assert body["object"] == "list"


def test_list_parses_with_the_openrouter_sdk_models(client):
    body = client.get("/api/v1/models").json()
    parsed = components.ModelsListResponse.model_validate(body)
    assert parsed.total_count == len(parsed.data) == len(body["data"])
    assert parsed.links.next is None
    by_id = {m.id: m for m in parsed.data}
    assert by_id["local/hibari"].architecture.output_modalities == ["speech"]
    assert "heart" in by_id["local/hibari"].supported_voices


def test_expected_models_present(client):
    ids = {m["id"] for m in _models(client)}
    for mid in ("local/whisper-base", "local/hibari", "openai/whisper-1", "openai/whisper-large-v3",
                "google/chirp-3", "openai/gpt-4o-mini-tts-2025-12-15", "openai/tts-1"):
        assert mid in ids


def test_local_substitutes_are_free_without_keys(client):
    # with no upstream key the local engine is the top (and only usable) provider: price 0, provider local
    m = {m["id"]: m for m in _models(client)}["openai/whisper-1"]
    assert m["top_provider"].get("provider") == "local"
    assert _price(m["pricing"]["prompt"]) == 0 and _price(m["pricing"]["completion"]) == 0


# ---- output_modalities filter -------------------------------------------------------------------------------
def test_filter_transcription_and_speech(client):
    every = _models(client)
    stt = _models(client, output_modalities="transcription")
    tts = _models(client, output_modalities="speech")
    assert stt and tts
    assert all(m["architecture"]["output_modalities"] == ["transcription"] for m in stt)
    assert all(m["architecture"]["output_modalities"] == ["speech"] for m in tts)
    chat = _models(client, output_modalities="text")
    assert {m["id"] for m in stt} | {m["id"] for m in tts} | {m["id"] for m in chat} == {m["id"] for m in every}
    assert not {m["id"] for m in stt} & {m["id"] for m in tts}


@pytest.mark.parametrize("value", ["transcription,speech", "speech, transcription", "all", "Speech,TRANSCRIPTION",
                                   ""])
def test_filter_lists_and_all(client, value):
    every = {m["id"] for m in _models(client)}
    if value not in ("all", ""):  # chat models output text (and audio), not "speech" or "transcription"
        every -= {m["id"] for m in _models(client, output_modalities="text")}
    assert {m["id"] for m in _models(client, output_modalities=value)} == every


def test_filter_known_modality_without_models(client):
    assert _models(client, output_modalities="image") == []
    assert {m["id"] for m in _models(client, output_modalities="image,speech")} == \
        {m["id"] for m in _models(client, output_modalities="speech")}


@pytest.mark.parametrize("value", ["transcriptions", "speech,bogus", "tts"])
def test_filter_bad_value_is_a_400_naming_the_parameter(client, value):
    r = client.get("/api/v1/models", params={"output_modalities": value})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400 and "output_modalities" in err["message"]
    r = client.get("/v1/models", params={"output_modalities": value})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "output_modalities" and err["type"] == "invalid_request_error"


def test_filter_on_v1(client):
    ids = {m["id"] for m in _models(client, "/v1/models", output_modalities="transcription")}
    assert "openai/whisper-1" in ids and "openai/tts-1" not in ids


# ---- one model ----------------------------------------------------------------------------------------------
def test_get_one_model(client):
    listed = {m["id"]: m for m in _models(client)}
    for path in ("/api/v1/models/openai/tts-1", "/api/v1/model/openai/tts-1"):
        r = client.get(path)
        assert r.status_code == 200, r.text
        one = r.json()["data"]
        assert one == listed["openai/tts-1"]
    r = client.get("/v1/models/openai/tts-1")
    assert r.status_code == 200 and r.json()["object"] == "model" and r.json()["id"] == "openai/tts-1"
    r = client.get("/v1/models/openai/tts-9")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


# ---- endpoints ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mid", ["openai/whisper-1", "google/chirp-3", "local/whisper-base", "openai/tts-1",
                                 "local/hibari"])
def test_endpoints(client, mid):
    r = client.get(f"/api/v1/models/{mid}/endpoints")
    assert r.status_code == 200, r.text
    body = r.json()
    parsed = operations.ListEndpointsResponse.model_validate(body)  # the OpenRouter SDK's response model
    data = body["data"]
    assert data["id"] == mid and data["name"] and data["architecture"]["output_modalities"]
    eps = data["endpoints"]
    assert eps and len(parsed.data.endpoints) == len(eps)
    for e in eps:
        assert e["model_id"] == mid
        assert e["name"].endswith(f"| {mid}")
        assert e["provider_name"] and e["tag"]
        assert _price(e["pricing"]["prompt"]) >= 0
        assert isinstance(e["supported_parameters"], list) and e["supported_parameters"]
        assert e["status"] in (0, -1)
    tags = [e["tag"] for e in eps]
    assert tags.count("local") == 1  # the built-in engine, as provider or as the substitute
    local = next(e for e in eps if e["tag"] == "local")
    assert local["status"] == 0
    if not mid.startswith("local/"):
        assert local["substitute"] is True and eps[-1] is local  # the last resort
        assert any(e["status"] == -1 for e in eps)  # the upstream has no key here


@pytest.mark.parametrize("path", ["/api/v1/models/openai/whisper-2/endpoints", "/v1/models/openai/whisper-2/endpoints"])
def test_endpoints_unknown_model_404_with_suggestions(client, path):
    r = client.get(path)
    assert r.status_code == 404
    err = r.json()["error"]
    if path.startswith("/api/"):
        assert err["code"] == 404 and "openai/whisper-2" in err["message"]
        assert "openai/whisper-1" in err["metadata"]["suggestions"]
    else:
        assert err["param"] == "model"


# ---- voices -------------------------------------------------------------------------------------------------
def test_voices_match_supported_voices(client):
    models = {m["id"]: m for m in _models(client, output_modalities="speech")}
    for mid in ("openai/tts-1", "local/hibari", "google/gemini-2.5-flash-preview-tts"):
        r = client.get("/v1/audio/voices", params={"model": mid})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        own = [v for v in data if not v.get("alias_of")]
        assert [v["id"] for v in own] == models[mid]["supported_voices"]
        assert all(v["model"] == mid for v in data)
        assert sum(1 for v in data if v["default"]) == 1


def test_voices_without_model_lists_every_speech_model(client):
    speech = {m["id"] for m in _models(client, output_modalities="speech")}
    data = client.get("/v1/audio/voices").json()["data"]
    assert {v["model"] for v in data} == speech


def test_voices_of_a_transcription_model_is_a_400(client):
    r = client.get("/v1/audio/voices", params={"model": "openai/whisper-1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_voices_of_an_unknown_model_is_a_404_with_suggestions(client):
    r = client.get("/api/v1/audio/voices", params={"model": "openai/tts-2"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert "model" in err["message"] and "openai/tts-1" in err["metadata"]["suggestions"]


# ---- a server with an upstream configured: list prices and limits come from the catalog ----------------------
@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    catalog = tmp / "catalog.yaml"
    # the key makes OpenAI a usable provider; its base URL points at a closed local port so nothing can leave
    catalog.write_text("providers:\n  openai:\n    name: OpenAI\n    adapter: openai\n"
                       "    base_url: http://127.0.0.1:9/v1\n    api_key_env: OPENAI_API_KEY\n")
    s = ServerProcess(env={"OPENAI_API_KEY": "sk-test-not-a-real-key", "AUDIOROUTER_CATALOG": str(catalog),
                           "AUDIOROUTER_DATA_DIR": str(tmp / "data"), "AUDIOROUTER_PRELOAD": "false"},
                      tmp=tmp).start()
    yield s
    s.stop()


def test_configured_upstream_prices_and_limits(keyed_server):
    with httpx.Client(base_url=keyed_server.url, timeout=30) as c:
        models = {m["id"]: m for m in _models(c)}
        whisper = models["openai/whisper-1"]
        assert whisper["top_provider"].get("provider") == "openai"
        assert abs(_price(whisper["pricing"]["audio"]) - 0.006 / 60) < 1e-12  # $0.006 a minute, per second
        assert _price(whisper["pricing"]["prompt"]) == 0
        tts = models["openai/tts-1"]
        assert abs(_price(tts["pricing"]["prompt"]) - 15.0 / 1e6) < 1e-15  # $15 per million characters
        mini = models["openai/gpt-4o-mini-tts"]
        assert abs(_price(mini["pricing"]["prompt"]) - 0.6 / 1e6) < 1e-15
        assert abs(_price(mini["pricing"]["completion"]) - 12.0 / 1e6) < 1e-15
        # models whose only upstream has no key still fall back to the local engine
        assert models["google/chirp-3"]["top_provider"].get("provider") == "local"
        components.ModelsListResponse.model_validate(c.get("/api/v1/models").json())
        eps = c.get("/api/v1/models/openai/whisper-1/endpoints").json()["data"]["endpoints"]
        openai_ep = next(e for e in eps if e["tag"] == "openai")
        assert openai_ep["status"] == 0


# ---- speech models in OpenRouter's per-model shape ------------------------------------------------------------
def test_speech_models_describe_voices_and_speed_range(client):
    """GET /api/v1/audio/speech/models: OpenRouter's SpeechModelsListResponse, each model's speech output with
    typed supported_parameters (voice enum, speed range, response_format enum, instructions) as the envelope
    of its endpoints', each endpoint with its own; the flat supported_parameters of /api/v1/models stay."""
    listed = {m["id"]: m for m in _models(client, output_modalities="speech")}
    r = client.get("/api/v1/audio/speech/models")
    assert r.status_code == 200, r.text
    data = {m["id"]: m for m in r.json()["data"]}
    assert set(data) == set(listed)
    for mid, m in data.items():
        assert {"id", "name", "description", "created", "input_modalities", "output_modalities",
                "endpoints"} <= set(m)
        assert m["input_modalities"] == [{"type": "text"}]
        (out,) = m["output_modalities"]
        sp = out["supported_parameters"]
        assert out["type"] == "speech" and sp["voice"] == {"type": "enum", "values": listed[mid]["supported_voices"]}
        assert sp["response_format"]["type"] == "enum" and "mp3" in sp["response_format"]["values"]
        per_endpoint = []
        for e in m["endpoints"]:
            assert e["provider_slug"] and e["provider_name"]
            esp = e["output_modalities"][0]["supported_parameters"]
            per_endpoint.append(esp)
            if "speed" in esp:  # the model's range is the envelope of its endpoints'
                assert sp["speed"]["min"] <= esp["speed"]["min"] <= esp["speed"]["max"] <= sp["speed"]["max"]
        for p in ("speed", "instructions"):
            assert (p in sp) == any(p in esp for esp in per_endpoint), (mid, p)
        assert {"voice", "response_format"} <= set(listed[mid]["supported_parameters"])  # the flat list stays
        assert [v["id"] for v in m["voices"]] == listed[mid]["supported_voices"]
    mini = data["openai/gpt-4o-mini-tts"]["output_modalities"][0]["supported_parameters"]
    assert mini["speed"] == {"type": "range", "min": 0.25, "max": 4.0} and mini["instructions"] == {"type": "unknown"}
    eleven = data["elevenlabs/eleven-flash-v2.5"]["endpoints"][0]["output_modalities"][0]["supported_parameters"]
    assert eleven["speed"] == {"type": "range", "min": 0.7, "max": 1.2}  # what ElevenLabs voices accept
    gemini = {e["provider_slug"]: e["output_modalities"][0]["supported_parameters"]
              for e in data["google/gemini-2.5-flash-preview-tts"]["endpoints"]}
    assert "speed" not in gemini["google"] and gemini["google"]["instructions"] == {"type": "unknown"}


def test_one_speech_model_and_its_voices(client):
    r = client.get("/api/v1/audio/speech/models/deepgram/aura-2")
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["id"] == "deepgram/aura-2"
    voices = {v["id"]: v for v in m["voices"]}
    assert voices["thalia"]["language"] == "en" and voices["thalia"]["gender"] == "female"
    assert all(v["preview_text"] for v in voices.values())
    # the models API describes the same voices
    one = client.get("/api/v1/models/deepgram/aura-2").json()["data"]
    assert one["voices"] == m["voices"]
    assert client.get("/api/v1/audio/speech/models/openai/whisper-1").status_code == 400
    r = client.get("/api/v1/audio/speech/models/openai/tts-2")
    assert r.status_code == 404 and "openai/tts-1" in r.json()["error"]["metadata"]["suggestions"]
