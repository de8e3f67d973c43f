"""OpenAI's newer audio parameters and OpenRouter's provider list, end to end through the openai and openrouter
SDKs against strict fakes (tests/fakes: each checks the forwarded wire shape against the provider's published
types): include[]=logprobs, chunking_strategy, custom voice objects, OpenRouter as an upstream (diarize and
keyterms, verbose_json only where served, no routing keys), GET /api/v1/providers, voices per model."""
from __future__ import annotations

import math

import openai
import pytest

from conftest import DEV_AUDIO
from fakes.harness import api_client, b64, start_gateway
from fakes.openai_fake import OpenAIFake
from fakes.openrouter_fake import OpenRouterFake

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"


@pytest.fixture(scope="module")
def fakes():
    f = {"openai": OpenAIFake().start(), "openrouter": OpenRouterFake().start()}
    yield f
    for x in f.values():
        x.stop()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    providers = {
        "openai": {"name": "OpenAI", "adapter": "openai", "base_url": fakes["openai"].base_url,
                   "api_key_env": "OPENAI_API_KEY"},
        "openrouter": {"name": "OpenRouter", "adapter": "openrouter", "base_url": fakes["openrouter"].base_url,
                       "api_key": fakes["openrouter"].api_key},
    }
    models = [
        {"id": "test/or-diarize", "name": "a diarizing model through OpenRouter", "kind": "transcription",
         "endpoints": [{"provider": "openrouter", "upstream_model": "openai/gpt-4o-transcribe-diarize",
                        "capabilities": {"diarization": True, "keyterms": True, "verbose_json": True,
                                         "word_timestamps": True}}]},
    ]
    yield from start_gateway(tmp_path_factory.mktemp("params"), {"providers": providers, "models": models},
                             OPENAI_API_KEY=fakes["openai"].api_key)


@pytest.fixture
def client(gw, fakes):
    yield from api_client(gw, *fakes.values(), timeout=120)


@pytest.fixture
def oc(gw, client):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def stt_calls(fake):
    return [c for c in fake.calls if c.path.endswith("/audio/transcriptions")]


# ---- include[]=logprobs ----------------------------------------------------------------------------------------
def test_logprobs_are_forwarded_and_returned(oc, fakes):
    with open(JFK, "rb") as f:
        raw = oc.audio.transcriptions.with_raw_response.create(model="openai/gpt-4o-transcribe", file=f,
                                                                 include=["logprobs"])
    t = raw.parse()
    (call,) = stt_calls(fakes["openai"])
    assert call.form["include[]"] == ["logprobs"] and call.f1("response_format") == "json"
    sent = call.reply_json["logprobs"]
    assert [(lp.token, lp.logprob, lp.bytes) for lp in t.logprobs] == [(x["token"], x["logprob"], x["bytes"]) for x in sent]
    assert "include" not in (raw.headers.get("x-ignored-parameters") or "")


def test_logprobs_where_unsupported_are_reported_or_refused(oc, client, fakes):
    with open(JFK, "rb") as f:
        raw = oc.audio.transcriptions.with_raw_response.create(model="openai/whisper-1", file=f, include=["logprobs"])
    assert raw.headers["x-ignored-parameters"] == "include"
    assert raw.parse().logprobs is None
    (call,) = stt_calls(fakes["openai"])
    assert "include[]" not in call.form  # whisper-1 would refuse it
    with open(JFK, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        oc.audio.transcriptions.create(model="openai/whisper-1", file=f, include=["logprobs"],
                                       extra_body={"provider": {"require_parameters": True}})
    assert e.value.body["param"] == "include"
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "openai/gpt-4o-transcribe", "include": ["tokens"],
        "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "include[0]"


def test_local_whisper_gives_word_logprobs(client):
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "local/whisper-base", "include": ["logprobs"],
        "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 200, r.text
    body = r.json()
    lps = body["logprobs"]
    assert len(lps) == len(body["text"].split()) > 10
    assert all(x["logprob"] <= 0 and bytes(x["bytes"]).decode() == x["token"] for x in lps)
    assert math.exp(sum(x["logprob"] for x in lps) / len(lps)) > 0.5  # a clean clip: confident words
    assert "x-ignored-parameters" not in r.headers


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json"])
def test_logprobs_with_a_format_that_cannot_carry_them_are_reported_or_refused(oc, client, fakes, fmt):
    """OpenAI returns logprobs only in the json answer: asked with another format they are dropped, named in
    X-Ignored-Parameters, not sent upstream (OpenAI would refuse them), and a 400 under require_parameters."""
    with open(JFK, "rb") as f:
        raw = oc.audio.transcriptions.with_raw_response.create(model="openai/gpt-4o-transcribe", file=f,
                                                                 include=["logprobs"], response_format=fmt)
    assert raw.status_code == 200
    assert "include" in raw.headers["x-ignored-parameters"].split(",")
    assert "include[]" not in stt_calls(fakes["openai"])[-1].form
    n = len(stt_calls(fakes["openai"]))
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "openai/gpt-4o-transcribe", "include": ["logprobs"], "response_format": fmt,
        "provider": {"require_parameters": True}, "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["metadata"]["param"] == "include" and fmt in err["message"]
    assert len(stt_calls(fakes["openai"])) == n  # refused before any upstream call


def test_logprobs_in_the_streamed_done_event(oc, fakes):
    """stream=true: the transcript.text.done event carries the upstream's logprobs (OpenAI's
    TranscriptionTextDoneEvent.logprobs), as parsed by the openai SDK."""
    with open(JFK, "rb") as f:
        events = list(oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f,
                                                     include=["logprobs"], stream=True))
    (call,) = stt_calls(fakes["openai"])
    assert call.form["include[]"] == ["logprobs"] and call.f1("stream") == "true"
    done = events[-1]
    assert done.type == "transcript.text.done"
    sent = call.reply_json["logprobs"]
    assert [(lp.token, lp.logprob, lp.bytes) for lp in done.logprobs] == \
        [(x["token"], x["logprob"], x["bytes"]) for x in sent]


def test_streamed_logprobs_where_unsupported_are_reported(client, fakes):
    """A stream's headers go out before any provider answers: they name what the planned provider ignores."""
    with client.stream("POST", "/api/v1/audio/transcriptions", json={
            "model": "openai/whisper-1", "include": ["logprobs"], "stream": True,
            "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}}) as r:
        assert r.status_code == 200
        assert r.headers["x-ignored-parameters"] == "include"
        body = r.read().decode()
    assert '"transcript.text.done"' in body and '"logprobs"' not in body
    assert "include[]" not in stt_calls(fakes["openai"])[-1].form


# ---- chunking_strategy --------------------------------------------------------------------------------------------
def test_chunking_strategy_reaches_openai_in_the_sdks_shape(oc, fakes):
    vad = {"type": "server_vad", "threshold": 0.4, "silence_duration_ms": 300, "prefix_padding_ms": 200}
    with open(JFK, "rb") as f:
        raw = oc.audio.transcriptions.with_raw_response.create(model="openai/gpt-4o-mini-transcribe", file=f,
                                                                 chunking_strategy=vad)
    assert "x-ignored-parameters" not in raw.headers
    call = stt_calls(fakes["openai"])[-1]
    assert call.f1("chunking_strategy[type]") == "server_vad" and float(call.f1("chunking_strategy[threshold]")) == 0.4
    assert call.f1("chunking_strategy[silence_duration_ms]") == "300"
    assert call.f1("chunking_strategy[prefix_padding_ms]") == "200"
    with open(JFK, "rb") as f:
        oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f, chunking_strategy="auto")
    assert stt_calls(fakes["openai"])[-1].form["chunking_strategy"] == ["auto"]


def test_chunking_strategy_elsewhere_is_reported_and_bad_shapes_are_400(oc, fakes):
    with open(JFK, "rb") as f:
        raw = oc.audio.transcriptions.with_raw_response.create(model="openai/whisper-1", file=f,
                                                                 chunking_strategy="auto")
    assert raw.headers["x-ignored-parameters"] == "chunking_strategy"
    assert not any(k.startswith("chunking_strategy") for k in stt_calls(fakes["openai"])[-1].form)
    with open(JFK, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f,
                                       chunking_strategy={"type": "server_vad", "threshold": 2})
    assert e.value.body["param"] == "chunking_strategy.threshold"


def test_list_and_object_options_pass_through_in_bracket_form(client, fakes):
    """provider.options values are encoded the way the openai SDK encodes them: lists as name[], objects as
    name[key] (a JSON string or a bare name would be ignored or refused by OpenAI)."""
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "openai/gpt-4o-transcribe", "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"},
        "provider": {"options": {"openai": {"include": ["logprobs"],
                                            "chunking_strategy": {"type": "server_vad", "threshold": 0.6}}}}})
    assert r.status_code == 200, r.text
    call = stt_calls(fakes["openai"])[-1]
    assert call.form["include[]"] == ["logprobs"] and "include" not in call.form
    assert call.f1("chunking_strategy[type]") == "server_vad" and call.f1("chunking_strategy[threshold]") == "0.6"


# ---- voices ---------------------------------------------------------------------------------------------------
def test_custom_voice_object_is_forwarded(oc, fakes):
    audio = oc.audio.speech.create(model="openai/gpt-4o-mini-tts", input="Hello in my own voice.",
                                   voice={"id": "voice_1234"}, response_format="mp3")
    call = fakes["openai"].calls[-1]
    assert call.json["voice"] == {"id": "voice_1234"} and audio.content == call.reply_bytes


def test_custom_voice_object_where_unsupported_is_400(oc, fakes):
    with pytest.raises(openai.BadRequestError) as e:
        oc.audio.speech.create(model="openai/tts-1", input="Hello.", voice={"id": "voice_1234"})
    assert e.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as e:
        oc.audio.speech.create(model="openai/gpt-4o-mini-tts", input="Hello.", voice={"id": ""})
    assert e.value.body["param"] == "voice.id"
    assert fakes["openai"].calls == []


def test_voices_list_describes_each_voice(client):
    r = client.get("/v1/audio/voices", params={"model": "deepgram/aura-2"})
    assert r.status_code == 200
    by_id = {v["id"]: v for v in r.json()["data"]}
    assert by_id["thalia"]["language"] == "en" and by_id["thalia"]["gender"] == "female"
    assert by_id["apollo"]["gender"] == "male" and by_id["apollo"]["preview_text"]
    oai = {v["id"]: v for v in client.get("/v1/audio/voices", params={"model": "openai/gpt-4o-mini-tts"}).json()["data"]}
    assert oai["marin"]["custom_voices"] is True
    m = client.get("/api/v1/models/google/gemini-2.5-flash-preview-tts").json()["data"]
    assert m["expiration_date"] == "2026-12-18"


# ---- OpenRouter as an upstream -----------------------------------------------------------------------------------
def test_openrouter_diarize_and_keyterms_are_top_level_with_verbose_json(client, fakes):
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "test/or-diarize", "diarize": True, "keyterms": ["Kennedy"], "response_format": "verbose_json",
        "timestamp_granularities": ["word"], "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fakes["openrouter"])
    assert call.json["diarize"] is True and call.json["keyterms"] == ["Kennedy"]
    assert call.json["response_format"] == "verbose_json" and "provider" not in call.json
    words = r.json()["words"]
    assert {w["speaker"] for w in words} == {"0", "1"}


def test_openrouter_chirp_is_asked_for_json_only(client, fakes):
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "google/chirp-3", "response_format": "verbose_json", "provider": {"only": ["openrouter"]},
        "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fakes["openrouter"])
    assert call.json.get("response_format", "json") == "json" and "timestamp_granularities" not in call.json


def test_openrouter_routing_keys_are_refused_by_name(client, fakes):
    r = client.post("/api/v1/audio/speech", json={
        "model": "openai/tts-1", "input": "Hi.", "voice": "alloy",
        "provider": {"only": ["openrouter"], "options": {"openrouter": {"provider": {"sort": "price"}}}}})
    assert r.status_code == 400
    assert r.json()["error"]["metadata"]["param"] == "provider.options.openrouter.provider.sort"
    assert fakes["openrouter"].calls == []


# ---- GET /api/v1/providers -----------------------------------------------------------------------------------------
def test_providers_list_parses_with_the_openrouter_sdk(gw):
    from openrouter import OpenRouter
    with OpenRouter(api_key="unused", server_url=gw.url + "/api/v1") as orc:
        res = orc.providers.list()
    by_slug = {p.slug: p for p in res.data}
    assert {"openai", "openrouter", "local", "mistral"} <= set(by_slug)
    assert by_slug["openai"].name == "OpenAI"
    assert by_slug["openai"].privacy_policy_url.startswith("https://")
    assert by_slug["mistral"].headquarters == "FR"


# ---- response_format=diarized_json ----------------------------------------------------------------------------------
def test_openai_diarize_model_with_known_speakers(oc, fakes):
    ref = "data:audio/wav;base64," + b64(b"RIFF....WAVE")
    with open(JFK, "rb") as f:
        t = oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe-diarize", file=f,
                                           response_format="diarized_json",
                                           known_speaker_names=["agent", "customer"],
                                           known_speaker_references=[ref, ref])
    (call,) = stt_calls(fakes["openai"])
    assert call.f1("response_format") == "diarized_json" and call.form["chunking_strategy"] == ["auto"]
    assert call.form["known_speaker_names[]"] == ["agent", "customer"]
    assert call.form["known_speaker_references[]"] == [ref, ref]
    sent = call.reply_json["segments"]
    assert [(s.speaker, s.start, s.end, s.text) for s in t.segments] == \
        [(s["speaker"], s["start"], s["end"], s["text"].strip()) for s in sent]
    assert {s.speaker for s in t.segments} == {"agent", "customer"} and t.text == call.reply_json["text"]


def test_known_speakers_where_unsupported_is_400(oc, fakes):
    with open(JFK, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f, known_speaker_names=["a"],
                                       known_speaker_references=["data:audio/wav;base64,AAAA"])
    assert e.value.body["param"] == "known_speaker_names"
    with open(JFK, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        oc.audio.transcriptions.create(model="openai/gpt-4o-transcribe-diarize", file=f, known_speaker_names=["a"])
    assert e.value.body["param"] == "known_speaker_references"
    assert fakes["openai"].calls == []


def test_diarized_json_from_word_speakers_is_normalised(client, fakes):
    """OpenRouter labels speakers on the words (0, 1): the answer is OpenAI's diarized shape, turns cut at
    each change of speaker, labelled A, B in order of appearance."""
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "test/or-diarize", "response_format": "diarized_json",
        "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}})
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fakes["openrouter"])
    assert call.json["diarize"] is True and call.json["response_format"] == "verbose_json"
    words = call.reply_json["words"]
    body = r.json()
    assert body["task"] == "transcribe" and body["text"] == call.reply_json["text"]
    segs = body["segments"]
    speakers = [s["speaker"] for s in segs]
    assert speakers[0] == "A" and set(speakers) == {"A", "B"} and speakers == sorted(speakers)
    assert all(s["type"] == "transcript.text.segment" for s in segs)
    for label, n in (("A", 0), ("B", 1)):  # each speaker's turns hold exactly that speaker's words, in order
        mine = [w for w in words if w["speaker"] == n]
        turns = [s for s in segs if s["speaker"] == label]
        assert " ".join(s["text"] for s in turns) == " ".join(w["word"] for w in mine)
        assert (turns[0]["start"], turns[-1]["end"]) == (mine[0]["start"], mine[-1]["end"])


def test_local_engine_cannot_diarize(client):
    r = client.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes(), "audio/flac")},
                    data={"model": "local/whisper-base", "response_format": "diarized_json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "response_format" and "diariz" in err["message"]


# ---- the shipped catalog ---------------------------------------------------------------------------------------------
def test_every_audio_price_has_a_dated_source():
    import datetime
    import re

    from audiorouter.routing.catalog import Catalog
    cat = Catalog.load()
    priced = [(m.id, e) for m in cat.models.values() if m.kind in ("transcription", "speech") for e in m.endpoints
              if e.pricing.unit != "requests"]
    assert len(priced) > 20
    for mid, e in priced:
        src = e.pricing.source or ""
        assert src.startswith("https://") and re.search(r"\b20\d\d-\d\d(-\d\d)?\b", src), (mid, e.provider, src)
    for m in cat.models.values():
        if m.expiration_date:
            datetime.date.fromisoformat(m.expiration_date)
        for v in m.voice_details:
            assert v in m.voices, (m.id, v)
    assert cat.models["openai/gpt-4o-mini-transcribe-2025-12-15"].endpoints[0].upstream_model == \
        "gpt-4o-mini-transcribe-2025-12-15"
    assert not cat.models["mistralai/voxtral-mini-transcribe"].endpoints[0].capabilities.word_timestamps
