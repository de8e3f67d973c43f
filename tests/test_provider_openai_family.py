"""OpenAI-family adapters (OpenAI, Groq, Mistral, OpenRouter) against fakes that speak each provider's real
wire protocol: request shapes checked strictly by the fakes, answers parsed into our transcript and rendered
in every response format, speech streamed/transcoded, errors mapped, input audio converted when needed."""
from __future__ import annotations

import io
import re

import av
import numpy as np
import pytest

from conftest import DEV_AUDIO
from fakes.harness import api_client, assert_not_logged, b64, sha, start_gateway
from fakes.mistral_fake import MistralFake
from fakes.openai_fake import GroqFake, OpenAIFake
from fakes.openrouter_fake import OpenRouterFake
from fakes.runner import ALWAYS, encode_audio, probe

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
LIBRI = DEV_AUDIO / "librispeech_test-other_1688-142285-0000.flac"  # 15 s, 246 kB


@pytest.fixture(scope="module")
def fakes():
    f = {"openai": OpenAIFake().start(), "groq": GroqFake().start(), "mistral": MistralFake().start(),
         "openrouter": OpenRouterFake().start()}
    yield f
    for x in f.values():
        x.stop()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    providers = {
        "openai": {"name": "OpenAI", "adapter": "openai", "base_url": fakes["openai"].base_url,
                   "api_key_env": "OPENAI_API_KEY"},
        "groq": {"name": "Groq", "adapter": "groq", "base_url": fakes["groq"].base_url, "api_key_env": "GROQ_API_KEY"},
        "mistral": {"name": "Mistral", "adapter": "mistral", "base_url": fakes["mistral"].base_url,
                    "api_key_env": "MISTRAL_API_KEY"},
        # a key in the config file rather than the environment
        "openrouter": {"name": "OpenRouter", "adapter": "openrouter", "base_url": fakes["openrouter"].base_url,
                       "api_key": fakes["openrouter"].api_key},
    }
    models = [
        {"id": "test/multi", "name": "OpenAI then Groq", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "capabilities": {"prompt": True}},
            {"provider": "groq", "upstream_model": "whisper-large-v3", "capabilities": {"prompt": True}}]},
        {"id": "test/small-limit", "name": "OpenAI, 500 kB limit", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "limits": {"max_bytes": 500000},
             "input_formats": ["flac", "mp3", "wav"]}]},
        {"id": "test/mp3-only", "name": "OpenAI, mp3 only", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "input_formats": ["mp3"]}]},
    ]
    yield from start_gateway(tmp_path_factory.mktemp("family"), {"providers": providers, "models": models},
                             OPENAI_API_KEY=fakes["openai"].api_key, GROQ_API_KEY=fakes["groq"].api_key,
                             MISTRAL_API_KEY=fakes["mistral"].api_key)


@pytest.fixture
def client(gw, fakes):
    yield from api_client(gw, *fakes.values(), timeout=60)


def stt_json(client, model, path=JFK, fmt="flac", **extra):
    body = {"model": model, "input_audio": {"data": b64(path.read_bytes()), "format": fmt}, **extra}
    return client.post("/api/v1/audio/transcriptions", json=body)


def ts(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def decode_pcm_s16(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.float32) / 32768


# ---- OpenAI ----------------------------------------------------------------------------------------------
def test_openai_whisper_json_dialect(client, fakes):
    r = stt_json(client, "openai/whisper-1")
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "openai"
    call = fakes["openai"].calls[0]
    assert call.path == "/v1/audio/transcriptions"
    assert call.headers["authorization"] == f"Bearer {fakes['openai'].api_key}"
    assert call.f1("model") == "whisper-1" and call.f1("response_format") == "verbose_json"
    filename, _, data = call.files["file"]
    assert filename == "audio.flac" and data == JFK.read_bytes()  # accepted as is: not re-encoded
    body = r.json()
    assert body["text"] == call.info["heard"].text
    assert abs(body["usage"]["seconds"] - 11.0) < 0.05
    assert body["usage"]["cost"] == pytest.approx(11.0 / 60 * 0.006, rel=1e-3)
    assert fakes["openrouter"].calls == []  # the second endpoint of the model was not needed


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_openai_response_formats_multipart(client, fakes, fmt):
    files = {"file": ("jfk.flac", JFK.read_bytes(), "audio/flac")}
    data = {"model": "openai/whisper-1", "response_format": fmt}
    if fmt == "verbose_json":
        data["timestamp_granularities[]"] = ["word", "segment"]
    r = client.post("/v1/audio/transcriptions", files=files, data=data)
    assert r.status_code == 200, r.text
    call = fakes["openai"].calls[-1]
    # we always fetch structured JSON upstream and render the format ourselves
    assert call.f1("response_format") == "verbose_json"
    heard = call.info["heard"]
    if fmt == "json":
        assert r.json()["text"] == heard.text
    elif fmt == "text":
        assert r.text == heard.text + "\n"
    elif fmt == "verbose_json":
        body = r.json()
        assert call.form["timestamp_granularities[]"] == ["word", "segment"]
        assert body["language"] == "english" and body["task"] == "transcribe"
        assert [(s["text"], s["start"], s["end"]) for s in body["segments"]] == heard.segments
        assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == heard.words
    else:
        sep = "," if fmt == "srt" else "."
        text = r.text
        if fmt == "vtt":
            assert text.startswith("WEBVTT")
        # cues are cut at the upstream's word times (the gateway asks for words to build subtitles)
        assert "word" in call.form.get("timestamp_granularities[]", [])
        times = re.findall(r"(\d\d:\d\d:\d\d[.,]\d{3}) --> (\d\d:\d\d:\d\d[.,]\d{3})", text)
        starts = {ts(s, sep) for _, s, _ in heard.words}
        ends = {ts(e, sep) for _, _, e in heard.words}
        assert times and all(a in starts and b in ends for a, b in times)
        assert times[0][0] == ts(heard.words[0][1], sep) and times[-1][1] == ts(heard.words[-1][2], sep)
        assert " ".join(line for line in text.splitlines() if line and "-->" not in line
                        and not line.isdigit() and line != "WEBVTT") == heard.text


def test_openai_sdk_against_v1(gw, fakes, client):
    import openai
    oc = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    with open(JFK, "rb") as f:
        t = oc.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format="verbose_json",
                                           timestamp_granularities=["word"])
    heard = fakes["openai"].calls[-1].info["heard"]
    assert t.text == heard.text and [w.word for w in t.words] == [w for w, _, _ in heard.words]


def test_gpt4o_transcribe_json_only_and_token_usage(client, fakes):
    r = stt_json(client, "openai/gpt-4o-transcribe", response_format="srt")
    assert r.status_code == 200, r.text
    call = fakes["openai"].calls[0]
    assert call.f1("response_format") == "json" and "timestamp_granularities[]" not in call.form
    usage = call.reply_json["usage"]
    r2 = stt_json(client, "openai/gpt-4o-transcribe")
    body = r2.json()
    assert body["usage"]["input_tokens"] == usage["input_tokens"]
    assert body["usage"]["output_tokens"] == usage["output_tokens"]
    # OpenAI's list price (developers.openai.com, 2026-12-07): $2.50/M audio input, $10/M output
    assert body["usage"]["cost"] == pytest.approx(usage["input_tokens"] * 2.5e-6 + usage["output_tokens"] * 10e-6)
    # srt from a transcript without segments: cues spread over the measured duration
    assert "-->" in r.text and call.info["heard"].text.split()[0] in r.text


def test_openai_translation_sends_no_language(client, fakes):
    files = {"file": ("jfk.flac", JFK.read_bytes(), "audio/flac")}
    r = client.post("/v1/audio/translations", files=files, data={"model": "openai/whisper-1", "language": "de"})
    assert r.status_code == 200, r.text
    call = fakes["openai"].calls[0]
    assert call.path == "/v1/audio/translations" and "language" not in call.form
    assert r.json()["text"] == call.info["heard"].text


def test_openai_translation_with_word_timestamps_sends_no_granularities(client, fakes):
    """/audio/translations takes no timestamp_granularities[] (OpenAI refuses it: "Unrecognized request
    argument"); words asked for on a translation must not break it (found by tests/test_fuzz_api.py)."""
    files = {"file": ("jfk.flac", JFK.read_bytes(), "audio/flac")}
    r = client.post("/v1/audio/translations", files=files,
                    data={"model": "openai/whisper-1", "response_format": "verbose_json",
                          "timestamp_granularities[]": "word"})
    assert r.status_code == 200, r.text
    call = fakes["openai"].calls[0]
    assert call.path == "/v1/audio/translations" and "timestamp_granularities[]" not in call.form
    assert not fakes["openai"].violations


def test_openai_speech_passthrough_and_parameters(client, fakes):
    r = client.post("/v1/audio/speech", json={"model": "openai/tts-1", "input": "Hello there, this is a test.",
                                              "voice": "nova", "speed": 1.25})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    call = fakes["openai"].calls[0]
    assert call.json == {"model": "tts-1", "input": "Hello there, this is a test.", "voice": "nova",
                         "response_format": "mp3", "speed": 1.25}
    assert r.content == call.reply_bytes  # native format: bytes passed through untouched
    # pcm passthrough on the OpenRouter dialect (its default format)
    r = client.post("/api/v1/audio/speech", json={"model": "openai/tts-1", "input": "Short.", "voice": "alloy"})
    assert r.status_code == 200 and r.content == fakes["openai"].calls[-1].reply_bytes
    assert "rate=24000" in r.headers["content-type"]


def test_openai_speech_instructions_only_where_supported(client, fakes):
    r = client.post("/v1/audio/speech", json={"model": "openai/tts-1", "input": "Hi.", "voice": "nova",
                                              "instructions": "warmly"})
    assert r.status_code == 200 and r.headers.get("x-ignored-parameters") == "instructions"
    assert "instructions" not in fakes["openai"].calls[-1].json
    r = client.post("/v1/audio/speech", json={"model": "openai/gpt-4o-mini-tts", "input": "Hi.", "voice": "marin",
                                              "instructions": "warmly"})
    assert r.status_code == 200 and fakes["openai"].calls[-1].json["instructions"] == "warmly"


# ---- errors ----------------------------------------------------------------------------------------------
def test_upstream_400_is_the_clients_error_and_not_retried_elsewhere(client, fakes):
    fakes["openai"].fail(400, "Audio file is too short. Minimum audio length is 0.1 seconds.")
    r = stt_json(client, "openai/whisper-1")
    assert r.status_code == 400
    err = r.json()["error"]
    assert "too short" in err["message"] and err["metadata"]["provider_name"] == "openai"
    assert fakes["openrouter"].calls == []


def test_bad_key_is_not_echoed(client, fakes):
    key = fakes["openai"].api_key
    fakes["openai"].fail(401, f"Incorrect API key provided: {key}.", times=ALWAYS)
    for path in ("/api/v1/audio/transcriptions", "/v1/audio/transcriptions"):
        r = client.post(path, json={"model": "openai/whisper-1", "provider": {"only": ["openai"]},
                                    "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
        assert r.status_code == 502, r.text
        assert key not in r.text and key not in str(r.headers)
    # without `only`, a bad key on one provider falls back to the next at once
    r = stt_json(client, "openai/whisper-1")
    assert r.status_code == 200 and r.headers["x-provider"] == "openrouter"


def test_rate_limit_maps_to_429_with_retry_after(client, fakes):
    fakes["openai"].fail(429, "Rate limit reached for whisper-1", retry_after=30, times=ALWAYS)
    r = stt_json(client, "openai/whisper-1", provider={"only": ["openai"]})
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert r.json()["error"]["metadata"]["upstream_status"] == 429


def test_model_retired_upstream_is_a_gateway_error(client, fakes):
    fakes["openai"].fail(404, "The model `whisper-1` does not exist", times=ALWAYS)
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", JFK.read_bytes())},
                    data={"model": "openai/whisper-1", "provider": '{"only": ["openai"]}'})
    assert r.status_code == 502
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "does not exist" in err["message"]


# ---- input conversion ------------------------------------------------------------------------------------
def test_unaccepted_container_is_reencoded(client, fakes):
    samples, rate = _decode(JFK)
    aac = encode_audio(samples, rate, "aac")  # ADTS AAC: not an OpenAI container
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "openai/whisper-1", "provider": {"only": ["openai"]},
        "input_audio": {"data": b64(aac), "format": "aac"}})
    assert r.status_code == 200, r.text
    filename, _, data = fakes["openai"].calls[0].files["file"]
    info = probe(data)
    assert filename == "audio.flac" and info.container == "flac" and info.rate == 16000
    assert abs(info.duration - 11.0) < 0.1


def test_headerless_pcm_is_wrapped(client, fakes):
    samples, _rate = _decode(JFK, rate=16000)
    pcm = (samples * 32767).astype("<i2").tobytes()
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "test/mp3-only", "input_audio": {"data": b64(pcm), "format": "pcm"}})
    assert r.status_code == 200, r.text
    filename, _, data = fakes["openai"].calls[0].files["file"]
    assert filename == "audio.mp3" and probe(data).container == "mp3"
    assert abs(probe(data).duration - 11.0) < 0.15


def test_oversized_upload_is_shrunk_under_the_endpoint_limit(client, fakes):
    samples, rate = _decode(JFK)  # 44.1 kHz
    stereo = np.repeat((samples * 32767).astype("<i2")[:, None], 2, axis=1)
    buf = io.BytesIO()
    import wave
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(stereo.tobytes())
    big = buf.getvalue()
    assert len(big) > 1_500_000  # an accepted container, but three times the endpoint's 500 kB
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "test/small-limit", "input_audio": {"data": b64(big), "format": "wav"}})
    assert r.status_code == 200, r.text
    [call] = fakes["openai"].calls  # short enough to go whole: re-encoded, not split
    filename, _, data = call.files["file"]
    info = probe(data)
    assert filename == "audio.flac" and info.container == "flac" and info.rate == 16000
    assert len(data) <= 500000 and abs(info.duration - 11.0) < 0.05
    assert abs(r.json()["usage"]["seconds"] - 11.0) < 0.05


# ---- Groq ------------------------------------------------------------------------------------------------
def test_groq_verbose_json_words_and_translation(client, fakes):
    r = stt_json(client, "openai/whisper-large-v3", response_format="verbose_json",
                 timestamp_granularities=["word"], language="en")
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "groq"
    call = fakes["groq"].calls[0]
    assert call.path == "/openai/v1/audio/transcriptions"
    assert call.headers["authorization"] == f"Bearer {fakes['groq'].api_key}"
    assert call.f1("model") == "whisper-large-v3" and call.f1("language") == "en"
    body = r.json()
    assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == call.info["heard"].words
    assert "x_groq" not in body
    r = client.post("/v1/audio/translations", files={"file": ("jfk.flac", JFK.read_bytes())},
                    data={"model": "openai/whisper-large-v3", "response_format": "text"})
    assert r.status_code == 200 and fakes["groq"].calls[-1].path == "/openai/v1/audio/translations"
    # turbo cannot translate anywhere: a 400 naming the parameter and the model
    r = client.post("/v1/audio/translations", files={"file": ("jfk.flac", JFK.read_bytes())},
                    data={"model": "openai/whisper-large-v3-turbo"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "task" and "whisper-large-v3-turbo" in r.json()["error"]["message"]


def test_provider_options_reach_only_their_provider(client, fakes):
    opts = {"groq": {"prompt": "Expected vocabulary: OpenRouter, API"}, "openai": {"prompt": "OpenAI words"}}
    fakes["openai"].fail(503, "overloaded", times=ALWAYS)
    r = stt_json(client, "test/multi", provider={"options": opts})
    assert r.status_code == 200 and r.headers["x-provider"] == "groq"
    assert {c.f1("prompt") for c in fakes["openai"].calls} == {"OpenAI words"}
    assert fakes["groq"].calls[0].f1("prompt") == "Expected vocabulary: OpenRouter, API"
    fakes["openai"].clear()
    fakes["groq"].clear()
    r = stt_json(client, "test/multi", provider={"options": {"groq": {"prompt": "only for groq"}}})
    assert r.status_code == 200 and r.headers["x-provider"] == "openai"
    assert "prompt" not in fakes["openai"].calls[0].form and fakes["groq"].calls == []
    r = stt_json(client, "test/multi", provider={"order": ["groq"], "options": {"groq": {"prompt": "only for groq"}}})
    assert r.headers["x-provider"] == "groq" and fakes["groq"].calls[0].f1("prompt") == "only for groq"
    assert len(fakes["openai"].calls) == 1


def test_options_cannot_override_the_gateways_fields(client, fakes):
    r = stt_json(client, "test/multi", provider={"options": {"openai": {"model": "gpt-4o-transcribe"}}})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "provider.options.openai.model"


# ---- Mistral ---------------------------------------------------------------------------------------------
def test_mistral_transcription_fields(client, fakes):
    r = stt_json(client, "mistralai/voxtral-mini-transcribe", language="en", prompt="ignored here",
                 keyterms=["Open Router", "API"])
    assert r.status_code == 200, r.text
    call = fakes["mistral"].calls[0]
    assert call.path == "/v1/audio/transcriptions" and call.f1("model") == "voxtral-mini-transcribe-3-0"
    assert call.f1("language") == "en" and "timestamp_granularities" not in call.form
    # repeated under the plain name, as Mistral's SDK sends arrays (no `[]`)
    assert call.form["context_bias"] == ["Open_Router", "API"] and "context_bias[]" not in call.form
    assert "prompt" not in call.form and "response_format" not in call.form
    assert r.headers["x-ignored-parameters"] == "prompt"
    assert r.json()["text"] == call.info["heard"].text


def test_mistral_segments_and_words(client, fakes):
    r = stt_json(client, "mistralai/voxtral-mini-transcribe", response_format="verbose_json")
    assert r.status_code == 200, r.text
    call = fakes["mistral"].calls[0]
    assert call.form["timestamp_granularities"] == ["segment"]
    assert [(s["text"], s["start"], s["end"]) for s in r.json()["segments"]] == call.info["heard"].segments
    # words only from Voxtral 2 (voxtral-mini-2602): the language hint is dropped for them
    r = stt_json(client, "mistralai/voxtral-mini-2602", response_format="verbose_json",
                 timestamp_granularities=["word"], language="en")
    call = fakes["mistral"].calls[1]
    assert call.f1("model") == "voxtral-mini-2602"
    assert call.form["timestamp_granularities"] == ["word"] and "language" not in call.form
    assert [(w["word"], w["start"], w["end"]) for w in r.json()["words"]] == call.info["heard"].words


def test_mistral_voxtral3_is_never_asked_for_words(client, fakes):
    """Voxtral 3 answers `word` with a 400 (Mistral's migration guide): word timestamps on it are refused
    here, naming the parameter, and nothing reaches Mistral."""
    r = stt_json(client, "mistralai/voxtral-mini-transcribe", response_format="verbose_json",
                 timestamp_granularities=["word"])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["metadata"]["param"] == "timestamp_granularities"
    assert fakes["mistral"].calls == []
    # without verbose_json the granularity is no requirement: segments come back as segments, never as words
    r = stt_json(client, "mistralai/voxtral-mini-transcribe", response_format="json", timestamp_granularities=["word"])
    assert r.status_code == 200, r.text
    assert fakes["mistral"].calls[0].form["timestamp_granularities"] == ["segment"]


def test_mistral_diarized_json(client, fakes):
    r = stt_json(client, "mistralai/voxtral-mini-transcribe", response_format="diarized_json", language="en")
    assert r.status_code == 200, r.text
    call = fakes["mistral"].calls[0]
    assert call.f1("diarize") == "true" and call.form["timestamp_granularities"] == ["segment"]
    assert "language" not in call.form  # Mistral takes no language hint with timestamps
    segs = r.json()["segments"]
    sent = call.reply_json["segments"]
    assert [s["speaker"] for s in segs] == ["A" if x["speaker_id"] == "speaker_0" else "B" for x in sent]
    assert [s["text"] for s in segs] == [x["text"].strip() for x in sent]


def test_mistral_speech_streams_float_pcm(client, fakes):
    r = client.post("/v1/audio/speech", json={"model": "mistralai/voxtral-mini-tts", "voice": "gb_jane_neutral",
                                              "input": "Your order shipped this morning.", "response_format": "wav"})
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "mistral"
    call = fakes["mistral"].calls[0]
    assert call.json == {"model": "voxtral-mini-tts-3-0", "input": "Your order shipped this morning.",
                         "voice_id": "gb_jane_neutral", "response_format": "pcm", "stream": True}
    out = probe(r.content)
    assert out.container == "wav" and abs(out.duration - call.info["seconds"]) < 0.01
    sent = np.frombuffer(call.reply_bytes, dtype="<f4")
    got = decode_pcm_s16(r.content[44:])
    assert np.max(np.abs(got - sent[: len(got)])) < 1e-3  # the float samples survived intact
    r = client.post("/api/v1/audio/speech", json={"model": "mistralai/voxtral-mini-tts", "input": "Bonjour.",
                                                  "voice": "nobody"})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "voice"


# ---- OpenRouter as an upstream -------------------------------------------------------------------------------
def test_openrouter_transcription_is_base64_json(client, fakes):
    r = stt_json(client, "openai/whisper-1", response_format="verbose_json",
                 provider={"only": ["openrouter"], "options": {"openrouter": {"provider": {"data_collection": "deny"}}}})
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "openrouter"
    call = fakes["openrouter"].calls[0]
    assert call.path == "/api/v1/audio/transcriptions"
    assert call.headers["authorization"] == f"Bearer {fakes['openrouter'].api_key}"
    assert call.json["model"] == "openai/whisper-1" and call.json["input_audio"]["format"] == "flac"
    assert sha(call.info["bytes"]) == sha(JFK.read_bytes())
    assert call.json["response_format"] == "verbose_json" and call.json["provider"] == {"data_collection": "deny"}
    assert [(s["text"], s["start"], s["end"]) for s in r.json()["segments"]] == call.info["heard"].segments
    assert fakes["openai"].calls == []


def test_openrouter_speech_transcodes_from_pcm(client, fakes):
    body = {"model": "openai/tts-1", "input": "Hello from the fallback.", "voice": "alloy",
            "provider": {"only": ["openrouter"]}}
    r = client.post("/v1/audio/speech", json={**body, "response_format": "wav"})
    assert r.status_code == 200, r.text
    call = fakes["openrouter"].calls[0]
    assert call.path == "/api/v1/audio/speech" and call.json["response_format"] == "pcm"
    assert call.json["model"] == "openai/tts-1" and call.json["voice"] == "alloy"
    assert abs(probe(r.content).duration - call.info["seconds"]) < 0.01
    r = client.post("/v1/audio/speech", json={**body, "response_format": "mp3"})
    assert r.content == fakes["openrouter"].calls[-1].reply_bytes


# ---- every adapter: every response format, error mapping ---------------------------------------------------
ADAPTERS = {  # provider -> a model it serves (with `only` to pin it)
    "openai": "openai/whisper-1", "groq": "openai/whisper-large-v3",
    "mistral": "mistralai/voxtral-mini-transcribe", "openrouter": "openai/whisper-1",
}


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_every_adapter_every_format(client, fakes, provider, fmt):
    r = stt_json(client, ADAPTERS[provider], response_format=fmt, provider={"only": [provider]})
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == provider
    [call] = fakes[provider].calls
    heard = call.info["heard"]
    if fmt == "text":
        assert r.text == heard.text + "\n"
    elif fmt == "json":
        assert r.json()["text"] == heard.text and abs(r.json()["usage"]["seconds"] - 11.0) < 0.05
    elif fmt == "verbose_json":
        body = r.json()
        assert body["text"] == heard.text and abs(body["duration"] - 11.0) < 0.05
        assert [(x["start"], x["end"]) for x in body["segments"]] == [(a, b) for _, a, b in heard.segments]
    else:
        sep = "," if fmt == "srt" else "."
        cues = re.findall(r"(\d\d:\d\d:\d\d[.,]\d{3}) --> (\d\d:\d\d:\d\d[.,]\d{3})", r.text)
        assert cues and cues[0][0] == ts(heard.words[0][1], sep) and cues[-1][1] == ts(heard.words[-1][2], sep)


@pytest.mark.parametrize("status,expect", [(429, 429), (500, 502), (503, 503), (401, 502), (400, 400)])
@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_every_adapter_maps_errors(client, fakes, provider, status, expect):
    fake = fakes[provider]
    fake.fail(status, f"injected {status} (key {fake.api_key})", times=ALWAYS)
    r = stt_json(client, ADAPTERS[provider], provider={"only": [provider]})
    assert r.status_code == expect, r.text
    err = r.json()["error"]
    assert err["metadata"]["provider_name"] == provider and err["metadata"]["upstream_status"] == status
    assert f"injected {status}" in err["message"] and fake.api_key not in r.text


# ---- catalog / models --------------------------------------------------------------------------------------
def test_models_show_which_providers_are_usable(client):
    eps = client.get("/api/v1/models/openai/whisper-1/endpoints").json()["data"]["endpoints"]
    assert {e["tag"]: e["available"] for e in eps} == {"openai": True, "openrouter": True}
    eps = client.get("/api/v1/models/google/chirp-3/endpoints").json()["data"]["endpoints"]
    assert {e["tag"]: e["available"] for e in eps} == {"google": False, "openrouter": True}
    models = {m["id"]: m for m in client.get("/api/v1/models").json()["data"]}
    assert models["deepgram/nova-3"]["available"] is False and models["openai/tts-1"]["available"] is True


def test_no_key_in_gateway_log(client, gw, fakes):
    fakes["openai"].fail(500, "boom", times=ALWAYS)
    stt_json(client, "openai/whisper-1")
    assert_not_logged(gw, *(f.api_key for f in fakes.values()))


def _decode(path, rate=None):
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate or st.rate)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(st) for f in rs.resample(fr)]
        parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
        return np.concatenate(parts), rate or st.rate
