"""The Google adapter (Speech-to-Text v2 Chirp 3, Gemini TTS) through audiorouter's HTTP API, against a fake
Google speaking the real wire protocol (tests/fakes/google_fake.py)."""
from __future__ import annotations

import base64
import functools
import io
import itertools
import json
import re
import secrets

import av
import numpy as np
import pytest

from conftest import DEV_AUDIO
from fakes.google_fake import GoogleFake
from fakes.harness import (
    api_client,
    assert_not_logged,
    check_error,
    check_text_or_subtitles,
    norm,
    row,
    serve,
    start_gateway,
    transcribe,
)

KEY = "gk-test-" + secrets.token_hex(12)
BAD_KEY = "gk-wrong-" + secrets.token_hex(12)
TOKEN = "ya29.test-" + secrets.token_hex(12)
PROJECT = "audiorouter-test"
LIBRI = "librispeech_test-other_1688-142285-0000.flac"
JFK = "jfk_inaugural_excerpt.flac"
LONG = "long_concat_librispeech_test-other_dev.flac"
TTS_MODEL = "google/gemini-2.5-flash-preview-tts"
transcribe_json = functools.partial(transcribe, model="google/chirp-3")


@pytest.fixture(scope="module")
def fake():
    yield from serve(GoogleFake(KEY, project=PROJECT, location="us", access_token=TOKEN))


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    opts = {"project": PROJECT, "location": "us", "gemini_base_url": fake.url}

    def provider(name: str, **kw):
        return {"name": name, "adapter": "google", "base_url": fake.url, "timeout_s": 3, "options": opts, **kw}

    stt_caps = {"word_timestamps": True, "diarization": True, "temperature": False}
    catalog = {
        "providers": {
            "google": provider("Google", api_key_env="AR_TEST_GOOGLE_KEY"),
            "google_backup": provider("Google (backup)", api_key_env="AR_TEST_GOOGLE_KEY"),
            "google_badkey": provider("Google (bad key)", api_key_env="AR_TEST_GOOGLE_BADKEY"),
            "google_oauth": provider("Google (OAuth)", options={**opts, "access_token_env": "AR_TEST_GOOGLE_TOKEN"}),
        },
        "models": [
            {"id": "test/chirp-oauth", "name": "Chirp 3 via OAuth", "kind": "transcription",
             "endpoints": [{"provider": "google_oauth", "upstream_model": "chirp_3", "capabilities": stt_caps}]},
            {"id": "test/chirp-badkey", "name": "Chirp 3 with a bad key", "kind": "transcription",
             "endpoints": [{"provider": "google_badkey", "upstream_model": "chirp_3", "capabilities": stt_caps}]},
            {"id": "test/chirp-long", "name": "Chirp 3 without a length limit", "kind": "transcription",
             "endpoints": [{"provider": "google", "upstream_model": "chirp_3", "capabilities": stt_caps}]},
            {"id": "test/chirp-fallback", "name": "Chirp 3 twice", "kind": "transcription",
             "endpoints": [{"provider": "google", "upstream_model": "chirp_3", "capabilities": stt_caps},
                           {"provider": "google_backup", "upstream_model": "chirp_3", "capabilities": stt_caps}]},
        ],
    }
    yield from start_gateway(tmp_path_factory.mktemp("gw-google"), catalog, AR_TEST_GOOGLE_KEY=KEY,
                             AR_TEST_GOOGLE_BADKEY=BAD_KEY, AR_TEST_GOOGLE_TOKEN=TOKEN)


@pytest.fixture
def api(gw, fake):
    yield from api_client(gw, fake)


def recognize_calls(fake):
    return [c for c in fake.calls if c.path.endswith(":recognize")]


# ---- transcription --------------------------------------------------------------------------------------
def test_json_transcription_speaks_recognize_v2(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac")
    assert r.status_code == 200, r.text
    assert norm(r.json()["text"]) == norm(row(manifest, LIBRI)["text"])
    assert r.headers["x-provider"] == "google"
    (call,) = recognize_calls(fake)
    assert call.path == f"/v2/projects/{PROJECT}/locations/us/recognizers/_:recognize"
    assert call.headers["x-goog-api-key"] == KEY and "authorization" not in call.headers
    assert call.q1("key") is None  # the key never travels in the URL
    cfg = call.json["config"]
    assert cfg["model"] == "chirp_3" and cfg["autoDecodingConfig"] == {}
    assert cfg["languageCodes"] == ["auto"]
    assert cfg["features"]["enableWordTimeOffsets"] is True
    assert "diarizationConfig" not in cfg["features"]
    assert base64.b64decode(call.json["content"]) == (DEV_AUDIO / LIBRI).read_bytes()  # sent as is


def test_openai_multipart_language_maps_to_locale(api, fake, manifest):
    with open(DEV_AUDIO / JFK, "rb") as f:
        r = api.post("/v1/audio/transcriptions", files={"file": (JFK, f, "audio/flac")},
                     data={"model": "google/chirp-3", "language": "en", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert norm(body["text"]) == norm(row(manifest, JFK)["text"])
    assert body["language"] == "english"  # OpenAI dialect names the language
    assert abs(body["duration"] - row(manifest, JFK)["duration_s"]) < 0.05
    assert recognize_calls(fake)[0].json["config"]["languageCodes"] == ["en-US"]


def test_verbose_json_words_and_speakers(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac", response_format="verbose_json", timestamp_granularities=["word", "segment"],
                        diarize=True)
    assert r.status_code == 200, r.text
    body = r.json()
    ref = norm(row(manifest, LIBRI)["text"]).split()
    words = body["words"]
    assert [norm(w["word"]) for w in words] == ref
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.01 for w in words)
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(words))
    assert {w["speaker"] for w in words} == {"speaker_0", "speaker_1"}
    # a segment never mixes speakers, and the segments carry the whole text in order
    assert all(s.get("speaker") in ("speaker_0", "speaker_1") for s in body["segments"])
    assert norm(" ".join(s["text"] for s in body["segments"])) == " ".join(ref)
    assert body["language"] == "en"
    diar = recognize_calls(fake)[0].json["config"]["features"]["diarizationConfig"]
    assert diar["minSpeakerCount"] <= diar["maxSpeakerCount"]


def test_diarized_json_in_openai_shape(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac", response_format="diarized_json")
    assert r.status_code == 200, r.text
    assert "diarizationConfig" in recognize_calls(fake)[0].json["config"]["features"]
    segs = r.json()["segments"]
    assert segs[0]["speaker"] == "A" and {s["speaker"] for s in segs} == {"A", "B"}
    assert norm(" ".join(s["text"] for s in segs)) == norm(row(manifest, LIBRI)["text"])


def test_speaker_count_options_reach_google(api, fake):
    r = transcribe_json(api, JFK, "flac", diarize=True,
                        provider={"options": {"google": {"min_speakers": 2, "max_speakers": 3}}})
    assert r.status_code == 200, r.text
    assert recognize_calls(fake)[0].json["config"]["features"]["diarizationConfig"] == \
        {"minSpeakerCount": 2, "maxSpeakerCount": 3}
    r = transcribe_json(api, JFK, "flac", diarize=True, provider={"options": {"google": {"max_speakers": "many"}}})
    assert r.status_code == 400 and "max_speakers" in r.json()["error"]["message"]


def test_speaker_count_options_from_a_form(api, fake):
    """The openai SDK's extra_body on multipart: provider[options][google][max_speakers]=3, numbers as text."""
    r = api.post("/v1/audio/transcriptions", files={"file": (JFK, (DEV_AUDIO / JFK).read_bytes())},
                 data={"model": "google/chirp-3", "diarize": "true", "provider[options][google][min_speakers]": "2",
                       "provider[options][google][max_speakers]": "3"})
    assert r.status_code == 200, r.text
    assert recognize_calls(fake)[0].json["config"]["features"]["diarizationConfig"] == \
        {"minSpeakerCount": 2, "maxSpeakerCount": 3}
    r = api.post("/v1/audio/transcriptions", files={"file": (JFK, (DEV_AUDIO / JFK).read_bytes())},
                 data={"model": "google/chirp-3", "diarize": "true", "provider[options][google][max_speakers]": "2.5"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.options.google.max_speakers", r.text


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_and_subtitle_formats(api, manifest, fmt):
    r = transcribe_json(api, LIBRI, "flac", response_format=fmt)
    check_text_or_subtitles(r, fmt, row(manifest, LIBRI)["text"], row(manifest, LIBRI)["duration_s"])


def test_unsupported_container_is_reencoded_to_flac(api, fake):
    r = transcribe_json(api, "sr_french.aiff", "aiff")
    assert r.status_code == 200, r.text
    (call,) = recognize_calls(fake)
    assert call.info["container"] == "flac"
    assert r.headers["x-audio-format-detected"] == "aiff"


def test_inline_limit_is_measured_on_the_base64_request(api, fake):
    """Google's 10 MB limit is on the request, whose content is base64: an 8.6 MB WAV (under 10 MB itself,
    11.5 MB as base64) must be re-encoded, not sent as it is (which Google answers with a 400)."""
    rate, seconds = 48000, 45
    t = np.arange(rate * seconds) / rate
    tone = (np.sin(2 * np.pi * 220 * t) * 0.3 * 32767).astype("<i2")
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).reshape(1, -1), format="s16", layout="stereo")
        frame.rate = rate
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    wav = buf.getvalue()
    assert 7_600_000 < len(wav) < 10_000_000 and len(base64.b64encode(wav)) > 10 * 1024 * 1024
    r = api.post("/v1/audio/transcriptions", files={"file": ("big.wav", wav, "audio/wav")},
                 data={"model": "test/chirp-long"})
    assert r.status_code == 200, r.text
    (call,) = recognize_calls(fake)
    assert call.info["container"] == "flac" and len(call.body) <= 10 * 1024 * 1024


def test_long_audio_is_recognized_in_chunks_and_stitched(api, fake, manifest):
    # sync recognize takes <= 60 s: the adapter itself cuts longer audio (whatever the gateway sends it)
    total = row(manifest, LONG)["duration_s"]
    r = transcribe_json(api, LONG, "flac", model="test/chirp-long", response_format="verbose_json",
                        timestamp_granularities=["word"])
    assert r.status_code == 200, r.text
    calls = recognize_calls(fake)
    assert len(calls) >= total // 59 + 1
    assert all(c.info["duration"] <= 59.0 for c in calls)
    assert abs(sum(c.info["duration"] for c in calls) - total) < 0.1
    # the fake answers placeholder words c<call>w<i>: each call's words must sit inside that call's window,
    # and the windows must tile the whole audio
    by_call: dict[int, list[dict]] = {}
    for w in r.json()["words"]:
        m = re.fullmatch(r"c(\d+)w(\d+)\.?", w["word"], re.I)
        assert m, w
        by_call.setdefault(int(m.group(1)), []).append(w)
    assert sorted(by_call) == sorted(c.index for c in calls)
    windows = []
    for c in calls:
        ws = by_call[c.index]
        offset = ws[0]["start"] - round(c.info["duration"] * 0.05, 3)
        assert all(offset - 0.01 <= w["start"] <= w["end"] <= offset + c.info["duration"] + 0.01 for w in ws)
        windows.append((offset, c.info["duration"]))
    windows.sort()
    assert abs(windows[0][0]) < 0.01
    for (o1, d1), (o2, _) in itertools.pairwise(windows):
        assert abs(o1 + d1 - o2) < 0.01
    starts = [w["start"] for w in r.json()["words"]]
    assert starts == sorted(starts)
    assert abs(r.json()["usage"]["seconds"] - total) < 0.05


def test_bearer_token_auth(api, fake, manifest):
    r = transcribe_json(api, JFK, "flac", model="test/chirp-oauth")
    assert r.status_code == 200, r.text
    assert norm(r.json()["text"]) == norm(row(manifest, JFK)["text"])
    (call,) = recognize_calls(fake)
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["x-goog-user-project"] == PROJECT
    assert "x-goog-api-key" not in call.headers


# ---- errors ---------------------------------------------------------------------------------------------
ERROR_CASES = [
    ("401", lambda f: f.fail(401, "Request had invalid authentication credentials."), 502, "upstream_error"),
    ("403", lambda f: f.fail(403, "The caller does not have permission"), 502, "upstream_error"),
    ("404", lambda f: f.fail(404, "Recognizer not found."), 502, "upstream_error"),
    ("429", lambda f: f.fail(429, "Quota exceeded for quota metric 'Requests'."), 429, "upstream_error"),
    ("500", lambda f: f.fail(500, "Internal error encountered."), 502, "upstream_error"),
    ("503", lambda f: f.fail(503, "The service is currently unavailable."), 503, "upstream_error"),
    ("400", lambda f: f.fail(400, "Invalid audio channel count."), 400, "invalid_request_error"),
    ("notjson", lambda f: f.malformed(), 502, "upstream_error"),
    ("badshape", lambda f: f.fail_raw(200, b'{"results": 7}'), 502, "upstream_error"),
    ("baddur", lambda f: f.fail_raw(200, json.dumps({"results": [{"alternatives": [
        {"transcript": "x", "words": [{"word": "x", "startOffset": "soon", "endOffset": "1s"}]}]}]}).encode()),
     502, "upstream_error"),
    ("timeout", lambda f: f.timeout(6), 504, "timeout_error"),
]


@pytest.mark.parametrize("dialect", ["openrouter", "openai"])
@pytest.mark.parametrize("case,inject,status,etype", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_upstream_errors_map_to_the_dialect_envelope(api, fake, dialect, case, inject, status, etype):
    inject(fake)
    r = transcribe_json(api, JFK, "flac", dialect=dialect)
    err = check_error(r, status, dialect=dialect, etype=etype, provider="google", secrets=(KEY,))
    assert err["message"].startswith("google")


def test_upstream_message_is_parsed_and_key_redacted(api, fake):
    fake.fail(403, f"API key {KEY} lacks permission speech.recognizers.recognize")
    r = transcribe_json(api, JFK, "flac")
    assert r.status_code == 502
    msg = r.json()["error"]["message"]
    assert "PERMISSION_DENIED" in msg and "lacks permission" in msg and KEY not in msg


def test_invalid_api_key_is_not_blamed_on_the_client(api, fake):
    r = transcribe_json(api, JFK, "flac", model="test/chirp-badkey")
    assert r.status_code == 502, r.text  # Google says 400 API_KEY_INVALID; the client did nothing wrong
    assert "API key not valid" in r.json()["error"]["message"]
    assert BAD_KEY not in r.text
    assert recognize_calls(fake)[0].headers["x-goog-api-key"] == BAD_KEY


def test_retryable_failure_falls_back_to_the_next_endpoint(api, fake, manifest):
    fake.fail(503, "The service is currently unavailable.")
    r = transcribe_json(api, JFK, "flac", model="test/chirp-fallback")
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "google_backup" and r.headers["x-attempts"] == "2"
    assert norm(r.json()["text"]) == norm(row(manifest, JFK)["text"])


def test_client_error_is_not_retried(api, fake):
    fake.fail(400, "Invalid audio.", times=2)
    r = transcribe_json(api, JFK, "flac", model="test/chirp-fallback")
    assert r.status_code == 400
    assert len(recognize_calls(fake)) == 1


# ---- Gemini TTS -----------------------------------------------------------------------------------------
def gemini_calls(fake):
    return [c for c in fake.calls if c.path.endswith(":generateContent")]


def test_gemini_tts_pcm_is_the_upstream_audio(api, fake):
    text = "The quick brown fox jumps over the lazy dog."
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": text, "voice": "Kore",
                                               "response_format": "pcm", "instructions": "Say cheerfully."})
    assert r.status_code == 200, r.text
    (call,) = gemini_calls(fake)
    assert r.content == call.reply_bytes
    assert r.headers["content-type"].startswith("audio/pcm") and "rate=24000" in r.headers["content-type"]
    assert call.path == "/v1beta/models/gemini-2.5-flash-preview-tts:generateContent"
    assert call.headers["x-goog-api-key"] == KEY
    gc = call.json["generationConfig"]
    assert gc["responseModalities"] == ["AUDIO"]
    assert gc["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Kore"
    prompt = call.json["contents"][0]["parts"][0]["text"]
    assert prompt.startswith("Say cheerfully") and prompt.endswith(text)
    # billed from the usage Gemini reported: 0.5 $/M prompt tokens, 10 $/M audio tokens
    import math
    in_tok = max(1, math.ceil(len(prompt) / 4))
    out_tok = math.ceil(len(call.reply_bytes) / 48000 * 25)
    assert abs(float(r.headers["x-cost"]) - (in_tok * 0.5 + out_tok * 10.0) / 1e6) < 1e-9


def test_gemini_tts_wav_and_mp3(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello there.", "voice": "puck",
                                               "response_format": "wav"})
    assert r.status_code == 200, r.text
    pcm = gemini_calls(fake)[-1].reply_bytes
    assert r.content[:4] == b"RIFF"
    got, want = np.frombuffer(r.content[44:], "<i2"), np.frombuffer(pcm, "<i2")
    assert len(got) == len(want) and np.abs(got.astype(int) - want).max() <= 1  # same samples, re-quantized
    assert gemini_calls(fake)[-1].json["generationConfig"]["speechConfig"]["voiceConfig"][
        "prebuiltVoiceConfig"]["voiceName"] == "Puck"
    r = api.post("/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello again, in mp3.", "voice": "Charon"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/mpeg"
    pcm = gemini_calls(fake)[-1].reply_bytes
    with av.open(io.BytesIO(r.content)) as c:
        n = sum(f.samples for f in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    assert abs(n / rate - len(pcm) / 48000) < 0.1


def test_gemini_tts_errors(api, fake):
    fake.fail(429, "Resource has been exhausted (e.g. check quota).")
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello.", "voice": "Kore"})
    assert r.status_code == 429 and r.json()["error"]["metadata"]["provider_name"] == "google"
    fake.fail_raw(200, json.dumps({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}).encode())
    r = api.post("/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello.", "voice": "Kore"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert "PROHIBITED_CONTENT" in r.json()["error"]["message"]
    fake.fail_raw(200, json.dumps({"candidates": [{"content": {"parts": [{"text": "I cannot"}]},
                                                   "finishReason": "OTHER"}]}).encode())
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello.", "voice": "Kore"})
    assert r.status_code == 502 and "finishReason OTHER" in r.json()["error"]["message"]
    fake.malformed()
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello.", "voice": "Kore"})
    assert r.status_code == 502
    fake.fail(400, "Request contains an invalid argument.")
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": "Hello.", "voice": "Kore"})
    assert r.status_code == 400 and "INVALID_ARGUMENT" in r.json()["error"]["message"]


def test_gemini_tts_dialogue_in_two_voices(api, fake):
    """input as OpenRouter's turns in two voices: one call with Gemini's multiSpeakerVoiceConfig (the fake checks
    its exact shape: two speakers, each with a prebuilt voice) and the prompt written as that dialogue."""
    turns = [{"text": "Hello there.", "voice": "Kore"},
             {"text": "Hi! How are you?", "voice": "puck", "instructions": "cheerfully"},
             {"text": "Fine, thanks."}]  # no voice of its own: the request's
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "input": turns, "voice": "Kore",
                                               "response_format": "pcm"})
    assert r.status_code == 200, r.text
    (call,) = gemini_calls(fake)
    assert r.content == call.reply_bytes
    sc = call.json["generationConfig"]["speechConfig"]
    assert "voiceConfig" not in sc
    assert call.info["speakers"] == {"Speaker1": "Kore", "Speaker2": "Puck"}
    prompt = call.json["contents"][0]["parts"][0]["text"]
    assert prompt.splitlines()[1:] == ["Speaker1: Hello there.", "Speaker2: [cheerfully] Hi! How are you?",
                                       "Speaker1: Fine, thanks."]


def test_gemini_dialogue_through_the_openrouter_sdk(gw, api, fake):
    """The openrouter SDK's tts.create_speech with `input` as its SpeechTurn list reaches Gemini as a dialogue."""
    from openrouter import OpenRouter
    with OpenRouter(api_key="unused", server_url=gw.url + "/api/v1", retry_config=None) as orc:
        resp = orc.tts.create_speech(model=TTS_MODEL, voice="Zephyr", response_format="pcm",
                                     input=[{"text": "Are we live?"}, {"text": "We are.", "voice": "Fenrir"}])
        audio = resp.read()
    (call,) = gemini_calls(fake)
    assert audio == call.reply_bytes
    assert call.info["speakers"] == {"Speaker1": "Zephyr", "Speaker2": "Fenrir"}


def test_gemini_tts_turns_in_one_voice_are_plain_speech(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": TTS_MODEL, "voice": "Charon",
                                               "input": [{"text": "One."}, {"text": "Two.", "voice": "charon"}]})
    assert r.status_code == 200, r.text
    (call,) = gemini_calls(fake)
    sc = call.json["generationConfig"]["speechConfig"]
    assert sc == {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Charon"}}}
    assert call.json["contents"][0]["parts"][0]["text"] == "One.\nTwo."


@pytest.mark.parametrize("body, param", [
    ({"model": TTS_MODEL, "voice": "Kore", "input": [{"text": "A."}, {"text": "B.", "voice": "Puck"},
                                                    {"text": "C.", "voice": "Leda"}]}, "input"),
    ({"model": TTS_MODEL, "voice": "Kore", "input": [{"text": "A."}, {"text": "B.", "voice": "alloy"}]},
     "input[1].voice"),
    ({"model": TTS_MODEL, "input": [{"text": "A.", "speaker": "Joe"}]}, "input[0].speaker"),
    ({"model": TTS_MODEL, "input": []}, "input"),
    ({"model": "openai/gpt-4o-mini-tts", "voice": "alloy",
      "input": [{"text": "A."}, {"text": "B.", "voice": "echo"}]}, "input"),
])
def test_dialogue_problems_are_400_naming_the_field(api, fake, body, param):
    r = api.post("/api/v1/audio/speech", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["metadata"]["param"] == param
    assert not gemini_calls(fake)  # refused before any upstream call (three voices: Gemini speaks two)


def test_no_secret_in_server_log(api, fake, gw):
    fake.fail(401, f"bad credentials {KEY}")
    transcribe_json(api, JFK, "flac")
    transcribe_json(api, JFK, "flac", model="test/chirp-oauth")
    assert_not_logged(gw, KEY, BAD_KEY, TOKEN)
