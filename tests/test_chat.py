"""Audio chat (POST /api/v1/chat/completions and /v1/chat/completions) through the openai and openrouter
Python SDKs against a strict fake OpenAI chat upstream (tests/fakes/openai_chat_fake.py): input_audio parts,
spoken answers whole and streamed, multi-turn by audio id, usage and cost, the ledger, fallbacks, and the bad
input list (400 naming the exact path, 413 stating the limit)."""
from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from conftest import DEV_AUDIO
from fakes.gemini_chat_fake import GeminiChatFake
from fakes.harness import api_client, b64, check_error, start_gateway
from fakes.openai_chat_fake import OpenAIChatFake, OpenRouterChatFake
from fakes.runner import encode_audio, probe, tone

QUESTION = DEV_AUDIO / "sr_english.wav"  # 2.7 s, "one two three"
JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # 11 s, flac: re-encoded to wav for OpenAI
# catalog prices of openai/gpt-4o-audio-preview (USD per million tokens): text in/out, audio in/out
PRICES = (2.5, 10.0, 40.0, 80.0)
MAX_PART = 2_000_000


@pytest.fixture(scope="module")
def fake():
    f = OpenAIChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def orfake():
    f = OpenRouterChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gemini():
    f = GeminiChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, orfake, gemini, tmp_path_factory):
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"},
                 "openrouter": {"name": "OpenRouter", "adapter": "openrouter", "base_url": orfake.base_url,
                                "api_key_env": "OPENROUTER_API_KEY"},
                 "google": {"name": "Google", "adapter": "google", "api_key_env": "GOOGLE_API_KEY",
                            "options": {"gemini_base_url": gemini.url}}}
    audio_caps = {"audio_input": True, "audio_output": True, "streaming": True}
    pricing = {"per_million_input_tokens": 2.5, "per_million_output_tokens": 10.0,
               "per_million_audio_input_tokens": 40.0, "per_million_audio_output_tokens": 80.0}
    voices = ["alloy", "nova", "shimmer"]
    models = [
        # the model name the seeds' examples use
        {"id": "openai/gpt-5.4-audio-preview", "name": "seed example model", "kind": "chat", "voices": voices,
         "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-audio-preview", "pricing": pricing,
                        "input_formats": ["wav", "mp3"], "capabilities": audio_caps}]},
        {"id": "test/text-chat", "name": "a text-only chat model", "kind": "chat",
         "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-mini",
                        "pricing": {"per_million_input_tokens": 0.15, "per_million_output_tokens": 0.6}}]},
        {"id": "test/retired", "name": "an upstream model that is gone", "kind": "chat", "voices": voices,
         "endpoints": [{"provider": "openai", "upstream_model": "gpt-retired", "capabilities": audio_caps}]},
        # provider.require_parameters: the first endpoint takes no temperature, the second does
        {"id": "test/temperature", "name": "two endpoints, one without temperature", "kind": "chat",
         "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-mini", "capabilities": {"temperature": False}},
                       {"provider": "openrouter", "upstream_model": "openai/gpt-4o-mini"}]},
        {"id": "test/no-temperature", "name": "no endpoint takes temperature", "kind": "chat",
         "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-mini", "capabilities": {"temperature": False}}]},
    ]
    yield from start_gateway(tmp_path_factory.mktemp("chat"), {"providers": providers, "models": models},
                             OPENAI_API_KEY=fake.api_key, OPENROUTER_API_KEY=orfake.api_key,
                             GOOGLE_API_KEY=gemini.api_key,
                             AUDIOROUTER_CHAT_MAX_AUDIO_BYTES=str(MAX_PART))


@pytest.fixture
def client(gw, fake):
    yield from api_client(gw, fake, timeout=60)


@pytest.fixture
def oai(gw, fake):
    fake.clear()
    with OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", max_retries=0) as c:
        yield c
    assert not fake.violations, fake.violations


def audio_part(path=QUESTION, fmt="wav"):
    return {"type": "input_audio", "input_audio": {"data": b64(path.read_bytes()), "format": fmt}}


def cost_of(u: dict) -> float:
    pin, pout, pai, pao = PRICES
    ai, ao = u["prompt_tokens_details"]["audio_tokens"], u["completion_tokens_details"]["audio_tokens"]
    return ((u["prompt_tokens"] - ai) * pin + ai * pai + (u["completion_tokens"] - ao) * pout + ao * pao) / 1e6


# ---- the seeds' examples, verbatim but for the base URL -----------------------------------------------------
def test_seed_python_audio_in(gw, fake, tmp_path, monkeypatch):
    shutil.copy(QUESTION, tmp_path / "question.wav")
    monkeypatch.chdir(tmp_path)
    fake.clear()
    client = OpenAI(base_url=gw.url + "/v1", api_key="lr_live_xxxx")
    import base64

    with open("question.wav", "rb") as f:
        audio_data = base64.b64encode(f.read()).decode("utf-8")

    response = client.chat.completions.create(
        model="openai/gpt-5.4-audio-preview",
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {
                            "data": audio_data,
                            "format": "wav",
                        },
                    }
                ],
            }
        ],
    )
    print(response.choices[0].message.content)
    heard = probe(QUESTION.read_bytes()).duration
    assert response.choices[0].message.content == f"I heard {heard:.1f} seconds of audio."
    assert not fake.violations
    sent = fake.calls[-1].json["messages"][0]["content"][0]["input_audio"]
    assert base64.b64decode(sent["data"]) == QUESTION.read_bytes()  # wav passes as it came


def test_seed_stream_helper_pcm16(oai, fake):
    pieces: list[bytes] = []
    transcript = []
    with oai.chat.completions.stream(
        model="openai/gpt-5.4-audio-preview",
        modalities=["text", "audio"],
        audio={"voice": "nova", "format": "pcm16"},
        messages=[{"role": "user", "content": "Tell me a short joke."}],
    ) as stream:
        for chunk in stream:
            if chunk.type != "chunk" or not chunk.chunk.choices:
                continue
            delta = chunk.chunk.choices[0].delta
            if delta.audio:
                if delta.audio.data:
                    pieces.append(base64.b64decode(delta.audio.data))
                if delta.audio.transcript:
                    transcript.append(delta.audio.transcript)
    pcm = b"".join(pieces)
    answer = "You said: Tell me a short joke."
    assert "".join(transcript) == answer
    # exactly the upstream's audio, s16le 24 kHz
    assert len(pcm) == len(encode_audio(tone(len(answer) * 0.06, 24000), 24000, "pcm"))
    assert fake.calls[-1].json["stream"] is True and fake.calls[-1].json["stream_options"] == {"include_usage": True}


# ---- whole answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac", "opus"])
def test_spoken_answer_whole(oai, fake, fmt):
    r = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", modalities=["text", "audio"],
                                    audio={"voice": "alloy", "format": fmt},
                                    messages=[{"role": "user", "content": [audio_part()]}])
    msg = r.choices[0].message
    assert msg.content is None
    heard = probe(QUESTION.read_bytes()).duration
    assert msg.audio.transcript == f"I heard {heard:.1f} seconds of audio."
    assert msg.audio.id.startswith("audio_") and msg.audio.expires_at > time.time() + 3000
    got = probe(base64.b64decode(msg.audio.data))
    assert got.container == {"mp3": "mp3", "wav": "wav", "flac": "flac", "opus": "ogg"}[fmt]
    assert abs(got.duration - len(msg.audio.transcript) * 0.06) < 0.1
    u = r.usage.model_dump()
    assert u["prompt_tokens_details"]["audio_tokens"] == int(np.ceil(heard * 10))
    assert u["completion_tokens_details"]["audio_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["cost"] == pytest.approx(cost_of(u), rel=1e-6)


def test_flac_input_is_reencoded_to_wav_for_openai(oai, fake):
    r = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview",
                                    messages=[{"role": "user", "content": [
                                        {"type": "text", "text": "What is said here?"}, audio_part(JFK, "flac")]}])
    sent = fake.calls[-1].json["messages"][0]["content"]
    assert sent[0] == {"type": "text", "text": "What is said here?"}
    assert sent[1]["input_audio"]["format"] == "wav"
    assert abs(probe(base64.b64decode(sent[1]["input_audio"]["data"])).duration - 11.0) < 0.1
    assert r.choices[0].message.content == "I heard 11.0 seconds of audio."


def test_data_uri_prefix_is_stripped_and_bytes_sniffed(client, fake):
    data = "data:audio/wav;base64," + b64(QUESTION.read_bytes())
    r = client.post("/api/v1/chat/completions", json={
        "model": "openai/gpt-5.4-audio-preview",
        # the client says mp3, the bytes are wav: the bytes win
        "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}]}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "OpenAI" and body["object"] == "chat.completion"
    assert fake.calls[-1].json["messages"][0]["content"][0]["input_audio"]["format"] == "wav"


def test_text_turn_relayed_with_params_and_openrouter_fields_dropped(client, fake):
    r = client.post("/api/v1/chat/completions", json={
        "model": "test/text-chat", "messages": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "hello there"}],
        "temperature": 0.3, "max_tokens": 50, "stop": ["\n"], "seed": 7, "top_p": 0.9, "user": "u-1",
        "metadata": {"k": "v"}, "provider": {"sort": "price"}, "session_id": "s-1"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "You said: hello there"
    sent = fake.calls[-1].json
    assert sent["model"] == "gpt-4o-mini"
    assert {k: sent[k] for k in ("temperature", "max_tokens", "stop", "seed", "top_p", "user", "metadata")} == \
        {"temperature": 0.3, "max_tokens": 50, "stop": ["\n"], "seed": 7, "top_p": 0.9, "user": "u-1", "metadata": {"k": "v"}}
    assert "provider" not in sent and "session_id" not in sent


def test_models_fallback_after_upstream_404(client, fake):
    r = client.post("/api/v1/chat/completions", json={
        "model": "test/retired", "models": ["openai/gpt-5.4-audio-preview"],
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "openai/gpt-5.4-audio-preview"
    assert [c.json["model"] for c in fake.calls] == ["gpt-retired", "gpt-4o-audio-preview"]
    fake.violations.clear()  # the retired model was refused by the fake on purpose


# ---- streamed answers ---------------------------------------------------------------------------------------
def test_stream_create_ends_with_usage_chunk_and_done(gw, oai, fake):
    stream = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", stream=True,
                                         modalities=["text", "audio"], audio={"voice": "nova", "format": "pcm16"},
                                         messages=[{"role": "user", "content": [audio_part()]}])
    chunks = list(stream)
    audio = [c.choices[0].delta.audio for c in chunks if c.choices and c.choices[0].delta.audio]
    ids = [a.id for a in audio if a.id]
    assert len(ids) == 1 and ids[0].startswith("audio_")
    assert next(a.expires_at for a in audio if a.expires_at) > time.time()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    u = chunks[-1].usage.model_dump()
    assert u["prompt_tokens_details"]["audio_tokens"] > 0 and u["cost"] == pytest.approx(cost_of(u), rel=1e-6)
    # raw: the last event is [DONE]
    raw = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": "test/text-chat", "stream": True, "messages": [{"role": "user", "content": "one two"}]})
    assert raw.text.rstrip().endswith("data: [DONE]")
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in raw.text.splitlines() if line.startswith("data: {") and '"choices":[{' in line)
    assert text == "You said: one two"


# ---- multi-turn ---------------------------------------------------------------------------------------------
def test_multi_turn_by_audio_id_and_expiry(oai, fake):
    first = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", modalities=["text", "audio"],
                                        audio={"voice": "nova", "format": "wav"},
                                        messages=[{"role": "user", "content": [audio_part()]}])
    aid = first.choices[0].message.audio.id
    turn = [{"role": "user", "content": [audio_part()]}, {"role": "assistant", "audio": {"id": aid}},
            {"role": "user", "content": "And again?"}]
    second = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", messages=turn)
    assert second.choices[0].message.content == f"I heard {probe(QUESTION.read_bytes()).duration:.1f} seconds of audio."
    sent = fake.calls[-1].json["messages"][1]
    assert sent["role"] == "assistant" and set(sent["audio"]) == {"id"}
    assert sent["audio"]["id"] != aid and sent["audio"]["id"] in fake.issued  # the upstream's own id
    # an id the gateway never gave out
    with pytest.raises(BadRequestError) as e:
        oai.chat.completions.create(model="openai/gpt-5.4-audio-preview",
                                    messages=[turn[0], {"role": "assistant", "audio": {"id": "audio_nope"}}, turn[2]])
    assert e.value.body["param"] == "messages[1].audio.id"
    # after expires_at (the upstream's, 1 s here) a 400 names the field
    fake.ttl_s = 1
    try:
        short = oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", modalities=["text", "audio"],
                                            audio={"voice": "nova", "format": "mp3"},
                                            messages=[{"role": "user", "content": "hi"}])
    finally:
        fake.ttl_s = 3600
    assert short.choices[0].message.audio.expires_at <= time.time() + 1
    time.sleep(1.2)
    with pytest.raises(BadRequestError) as e:
        oai.chat.completions.create(model="openai/gpt-5.4-audio-preview", messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "audio": {"id": short.choices[0].message.audio.id}},
            {"role": "user", "content": "more"}])
    assert e.value.body["param"] == "messages[1].audio.id" and "expired" in e.value.body["message"]


# ---- the ledger ---------------------------------------------------------------------------------------------
def test_generation_row(client, fake):
    r = client.post("/api/v1/chat/completions", json={"model": "openai/gpt-5.4-audio-preview",
                                                      "messages": [{"role": "user", "content": [audio_part()]}]})
    assert r.status_code == 200, r.text
    gid = r.headers["x-generation-id"]
    assert r.json()["id"] == gid
    g = client.get("/api/v1/generation", params={"id": gid}).json()["data"]
    u = r.json()["usage"]
    assert g["api_type"] == "chat" and g["status"] == "success" and g["provider"] == "openai"
    assert g["tokens_prompt"] == u["prompt_tokens"] and g["tokens_completion"] == u["completion_tokens"]
    assert g["total_cost"] == pytest.approx(u["cost"], rel=1e-6, abs=1e-9)
    assert abs(g["seconds"] - probe(QUESTION.read_bytes()).duration) < 0.05


# ---- bad input ----------------------------------------------------------------------------------------------
def _post(client, dialect, body):
    return client.post("/api/v1/chat/completions" if dialect == "openrouter" else "/v1/chat/completions", json=body)


@pytest.mark.parametrize("dialect", ["openrouter", "openai"])
def test_bad_input_names_the_exact_path(client, fake, dialect):
    m = "openai/gpt-5.4-audio-preview"
    cases = [
        ({"model": m, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "!!not base64!!", "format": "wav"}}]}]},
         400, "messages[0].content[0].input_audio.data", "invalid base64"),
        ({"model": m, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": b64(b"hello, not audio" * 40), "format": "wav"}}]}]},
         400, "messages[0].content[0].input_audio.data", None),
        ({"model": m, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": b64(b"x" * 64), "format": "midi"}}]}]},
         400, "messages[0].content[0].input_audio.format", None),
        ({"model": m, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         400, "messages[0].content[0].input_audio", None),
        ({"model": m, "messages": []}, 400, "messages", None),
        ({"model": m}, 400, "messages", None),
        ({"model": m, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", None),
        ({"model": m, "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "ogg"},
          "messages": [{"role": "user", "content": "x"}]}, 400, "audio.format", None),
        ({"model": m, "modalities": ["text", "audio"], "messages": [{"role": "user", "content": "x"}]}, 400, "audio", None),
        ({"model": m, "modalities": ["text", "audio"], "audio": {"voice": "darth", "format": "mp3"},
          "messages": [{"role": "user", "content": "x"}]}, 400, "audio.voice", None),
        ({"model": m, "temperature": 3, "messages": [{"role": "user", "content": "x"}]}, 400, "temperature", None),
        ({"model": m, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens", None),
        ({"model": m, "n": 2, "messages": [{"role": "user", "content": "x"}]}, 400, "n", None),
        ({"model": "test/text-chat", "messages": [{"role": "user", "content": [audio_part()]}]},
         400, "messages[0].content[0].input_audio", "test/text-chat"),
        ({"model": "test/text-chat", "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "mp3"},
          "messages": [{"role": "user", "content": "x"}]}, 400, "modalities", "test/text-chat"),
        ({"model": "openai/nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model", None),
    ]
    for body, status, param, text in cases:
        r = _post(client, dialect, body)
        err = check_error(r, status, dialect=dialect)
        got = err["param"] if dialect == "openai" else err["metadata"]["param"]
        assert got == param, (body, r.text)
        assert err["message"].startswith(param), r.text
        if text:
            assert text in err["message"], r.text
    assert not fake.calls  # none of them reached the upstream


def test_oversized_audio_part_is_413_stating_the_limit(client, fake):
    big = encode_audio(tone(MAX_PART / 32000 + 1, 16000), 16000, "wav")
    assert len(big) > MAX_PART
    r = client.post("/v1/chat/completions", json={"model": "openai/gpt-5.4-audio-preview", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "input_audio", "input_audio": {"data": b64(big), "format": "wav"}}]}]})
    err = check_error(r, 413, dialect="openai")
    assert err["param"] == "messages[0].content[1].input_audio.data" and str(MAX_PART) in err["message"]


def test_errors_are_sdk_exceptions(oai):
    with pytest.raises(NotFoundError):
        oai.chat.completions.create(model="openai/nope", messages=[{"role": "user", "content": "x"}])


# ---- discovery ----------------------------------------------------------------------------------------------
def test_models_filter_by_modalities(client):
    out = {m["id"]: m for m in client.get("/api/v1/models", params={"output_modalities": "audio"}).json()["data"]}
    assert "openai/gpt-5.4-audio-preview" in out and "openai/gpt-4o-audio-preview" in out
    assert "test/text-chat" not in out and "openai/whisper-1" not in out
    arch = out["openai/gpt-5.4-audio-preview"]["architecture"]
    assert arch["input_modalities"] == ["text", "audio"] and arch["output_modalities"] == ["text", "audio"]
    assert "modalities" in out["openai/gpt-5.4-audio-preview"]["supported_parameters"]
    ins = {m["id"] for m in client.get("/api/v1/models", params={"input_modalities": "audio"}).json()["data"]}
    assert {"openai/gpt-5.4-audio-preview", "openai/whisper-1"} <= ins and "test/text-chat" not in ins
    eps = client.get("/api/v1/models/openai/gpt-5.4-audio-preview/endpoints").json()["data"]["endpoints"]
    assert eps[0]["pricing"]["audio"] == "0.00004" and eps[0]["capabilities"]["audio_output"] is True


# ---- the openrouter SDK -------------------------------------------------------------------------------------
def test_openrouter_sdk_chat_with_input_audio(gw, fake):
    from openrouter import OpenRouter
    fake.clear()
    with OpenRouter(api_key="sk-or-v1-test", server_url=gw.url + "/api/v1", retry_config=None) as orc:
        res = orc.chat.send(model="openai/gpt-5.4-audio-preview", messages=[
            {"role": "user", "content": [{"type": "text", "text": "What do you hear?"},
                                         {"type": "input_audio", "input_audio": {"data": b64(QUESTION.read_bytes()),
                                                                                 "format": "wav"}}]}])
    heard = probe(QUESTION.read_bytes()).duration
    assert res.choices[0].message.content == f"I heard {heard:.1f} seconds of audio."
    assert not fake.violations


# ---- keys: spend limits (402), rate limits (429), BYOK -----------------------------------------------------
@pytest.fixture(scope="module")
def keyed(fake, tmp_path_factory):
    """A gateway with auth on (a management key), the fake as OpenAI, with no gateway OpenAI key: a request is
    served only through a caller's own key (BYOK) or not at all."""
    import yaml

    from test_keys_support import Gateway, SqliteDatabase, gateway_env, new_management_key
    tmp = tmp_path_factory.mktemp("chat-keys")
    cat = tmp / "chat-catalog.yaml"
    cat.write_text(yaml.safe_dump({
        "providers": {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                                 "api_key_env": "OPENAI_API_KEY"}},
        "models": [{"id": "test/audio-chat", "name": "priced audio chat", "kind": "chat", "voices": ["nova"],
                    "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-audio-preview",
                                   "pricing": {"per_million_input_tokens": 2.5, "per_million_output_tokens": 10.0,
                                               "per_million_audio_input_tokens": 40.0,
                                               "per_million_audio_output_tokens": 80.0},
                                   "capabilities": {"audio_input": True, "audio_output": True}}]}]}))
    mgmt = new_management_key()
    db = SqliteDatabase(tmp / "data" / "ledger.db")
    env = gateway_env(tmp, database_url=db.url, management_key=mgmt, AUDIOROUTER_CATALOG=str(cat),
                      OPENAI_API_KEY="", AUDIOROUTER_RETRY_ATTEMPTS="1")
    g = Gateway(tmp, env, mgmt, db)
    yield g
    g.stop()


def test_keys_byok_limits_on_chat(keyed, fake):
    fake.clear()
    body = {"model": "test/audio-chat", "messages": [{"role": "user", "content": [audio_part()]}]}
    key, _ = keyed.create_key(limit=1)
    # no gateway key and no BYOK key yet: nobody can serve it
    r = keyed.client.post("/api/v1/chat/completions", json=body, headers=keyed.auth(key))
    assert r.status_code == 503 and r.json()["error"]["metadata"]["param"] == "model"
    # the caller's own OpenAI key (BYOK): the upstream sees it, the key is charged the BYOK fee
    r = keyed.client.post("/api/v1/byok", headers=keyed.auth(), json={
        "provider": "openai", "key": fake.api_key})
    assert r.status_code == 201, r.text
    r = keyed.client.post("/api/v1/chat/completions", json=body, headers=keyed.auth(key))
    assert r.status_code == 200, r.text
    assert fake.calls[-1].headers["authorization"] == f"Bearer {fake.api_key}"
    u = r.json()["usage"]
    assert u["cost"] == pytest.approx(cost_of(u) * 0.05, rel=1e-6)
    g = keyed.client.get("/api/v1/generation", params={"id": r.headers["x-generation-id"]},
                         headers=keyed.auth(key)).json()["data"]
    assert g["is_byok"] is True and g["api_type"] == "chat"
    assert g["upstream_inference_cost"] == pytest.approx(cost_of(u), rel=1e-6)
    # a spend limit below the estimate: 402 before the upstream is called
    poor, _ = keyed.create_key(limit=0.0000001, include_byok_in_limit=True)
    n = len(fake.calls)
    r = keyed.client.post("/v1/chat/completions", json=body, headers=keyed.auth(poor))
    assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_quota", r.text
    assert len(fake.calls) == n
    # a rate limit: 429 with Retry-After
    slow, _ = keyed.create_key(rate_limit_rpm=1)
    text = {"model": "test/audio-chat", "messages": [{"role": "user", "content": "hi"}]}
    keyed.client.post("/api/v1/chat/completions", json=text, headers=keyed.auth(slow))
    r = keyed.client.post("/api/v1/chat/completions", json=text, headers=keyed.auth(slow))
    assert r.status_code == 429 and "retry-after" in r.headers
    assert not fake.violations


def test_client_leaving_a_stream_cancels_its_row(client, fake):
    fake.chunk_delay_s = 0.2
    try:
        with client.stream("POST", "/api/v1/chat/completions", json={
                "model": "openai/gpt-5.4-audio-preview", "stream": True,
                "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]}) as r:
            gid = r.headers["x-generation-id"]
            next(r.iter_lines())
    finally:
        fake.chunk_delay_s = 0.0
    deadline = time.time() + 20
    while True:
        g = client.get("/api/v1/generation", params={"id": gid}).json()["data"]
        if g["status"] != "incomplete" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert g["status"] == "cancelled" and g["streamed"] is True


def test_seed_typescript_audio_in(gw, fake, tmp_path):
    from test_sdk_openai import JS_DIR, _npm_install
    why = "node is not installed" if shutil.which("node") is None else _npm_install()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the npm SDK test cannot run under CI: {why}")
        pytest.skip(f"openai npm SDK not available: {why}")
    shutil.copy(QUESTION, tmp_path / "question.wav")
    fake.clear()
    p = subprocess.run(["node", str(JS_DIR / "chat_seed.mjs")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "AUDIOROUTER_URL": gw.url}, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == f"I heard {probe(QUESTION.read_bytes()).duration:.1f} seconds of audio."
    assert not fake.violations


# ---- OpenRouter as an upstream: the whole body passes, routing fields included, and its stream -------------
def test_openrouter_upstream_gets_the_whole_body_and_streams(client, fake, orfake):
    orfake.clear()
    prefs = {"only": ["openrouter"], "data_collection": "deny"}
    body = {"model": "openai/gpt-4o-audio-preview", "provider": prefs, "transforms": [], "stream": True,
            "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "pcm16"},
            "messages": [{"role": "user", "content": [audio_part()]}]}
    with client.stream("POST", "/api/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["x-provider"] == "openrouter"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    sent = orfake.calls[-1].json
    assert sent["provider"] == prefs and sent["transforms"] == [] and sent["model"] == "openai/gpt-4o-audio-preview"
    assert sent["modalities"] == ["text", "audio"] and sent["audio"] == {"voice": "nova", "format": "pcm16"}
    said = "".join(e["choices"][0]["delta"].get("audio", {}).get("transcript", "") for e in events if e["choices"])
    assert said == f"I heard {probe(QUESTION.read_bytes()).duration:.1f} seconds of audio."
    assert events[-1]["usage"]["cost"] > 0 and events[-1]["provider"] == "OpenRouter"
    assert not fake.calls and not orfake.violations


# ---- Google Gemini: audio in through inline_data, text out ---------------------------------------------------
def test_gemini_audio_in_whole_and_streamed(oai, gemini):
    gemini.clear()
    heard = probe(QUESTION.read_bytes()).duration
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What do you hear?"}, audio_part()]}]
    r = oai.chat.completions.create(model="google/gemini-2.5-flash", messages=msgs, temperature=0.2, max_tokens=50)
    assert r.choices[0].message.content == f"I heard {heard:.1f} seconds of audio."
    sent = gemini.calls[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"][0]["parts"][1]["inline_data"]["mime_type"] == "audio/wav"
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}
    u = r.usage.model_dump()
    audio = math.ceil(heard * 32)
    assert u["prompt_tokens_details"]["audio_tokens"] == audio
    assert u["cost"] == pytest.approx(((u["prompt_tokens"] - audio) * 0.30 + audio * 1.00
                                       + u["completion_tokens"] * 2.50) / 1e6, rel=1e-6)
    chunks = list(oai.chat.completions.create(model="google/gemini-2.5-flash", messages=msgs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens_details.audio_tokens == audio
    assert gemini.calls[-1].path.endswith(":streamGenerateContent") and gemini.calls[-1].q1("alt") == "sse"
    # Gemini does not speak here: audio output is a 400 naming modalities and the model
    with pytest.raises(BadRequestError) as e:
        oai.chat.completions.create(model="google/gemini-2.5-flash", messages=msgs, modalities=["text", "audio"],
                                    audio={"voice": "nova", "format": "mp3"})
    assert e.value.body["param"] == "modalities" and "google/gemini-2.5-flash" in e.value.body["message"]
    assert not gemini.violations


# ---- provider.require_parameters, as on the audio endpoints ----------------------------------------------------
def test_require_parameters_excludes_providers_without_the_parameter(client, fake, orfake):
    orfake.clear()
    hi = [{"role": "user", "content": "hi"}]
    plain = client.post("/api/v1/chat/completions", json={"model": "test/temperature", "temperature": 0.2,
                                                           "messages": hi})
    assert plain.status_code == 200 and plain.headers["x-provider"] == "openai", plain.text  # catalog order
    strict = client.post("/api/v1/chat/completions", json={"model": "test/temperature", "temperature": 0.2,
                                                            "messages": hi, "provider": {"require_parameters": True}})
    assert strict.status_code == 200 and strict.headers["x-provider"] == "openrouter", strict.text
    assert orfake.calls[-1].json["temperature"] == 0.2
    # without the parameter nothing is excluded
    r = client.post("/api/v1/chat/completions", json={"model": "test/temperature", "messages": hi,
                                                       "provider": {"require_parameters": True}})
    assert r.status_code == 200 and r.headers["x-provider"] == "openai", r.text
    # no candidate left: a 400 naming the parameter, in both dialects
    for dialect, body in (("openrouter", {"model": "test/no-temperature"}),
                          ("openai", {"model": "test/temperature", "provider": {"only": ["openai"]}})):
        r = _post(client, dialect, {**body, "temperature": 0.2, "messages": hi,
                                    "provider": {**body.get("provider", {}), "require_parameters": True}})
        err = check_error(r, 400, dialect=dialect)
        assert (err["param"] if dialect == "openai" else err["metadata"]["param"]) == "temperature", r.text
        assert err["message"].startswith("temperature: ") and "test/" in err["message"], r.text
    assert "openrouter" in err["message"]  # who would have supported it
    assert not orfake.violations


# ---- the published schema -----------------------------------------------------------------------------------
def test_openapi_documents_the_chat_request_body(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/chat/completions", "/v1/chat/completions"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == ["model", "messages"]
        props = schema["properties"]
        assert {"messages", "modalities", "audio", "stream", "provider", "models", "temperature",
                "max_completion_tokens"} <= set(props)
        parts = props["messages"]["items"]["properties"]["content"]["anyOf"][1]["items"]["anyOf"]
        audio = next(p for p in parts if "input_audio" in p["properties"])["properties"]["input_audio"]
        assert audio["required"] == ["data", "format"] and "pcm16" in audio["properties"]["format"]["enum"]
        assert props["audio"]["properties"]["format"]["enum"] == ["wav", "mp3", "flac", "opus", "pcm16"]
