"""The Deepgram adapter (Nova-3 pre-recorded, Aura-2 speech) through audiorouter's HTTP API, against a fake
Deepgram speaking the real wire protocol (tests/fakes/deepgram_fake.py)."""
from __future__ import annotations

import functools
import io
import itertools
import secrets

import av
import numpy as np
import pytest

from conftest import DEV_AUDIO
from fakes.deepgram_fake import DeepgramFake
from fakes.harness import (
    api_client,
    assert_not_logged,
    b64,
    check_error,
    check_text_or_subtitles,
    norm,
    row,
    serve,
    start_gateway,
    transcribe,
)

KEY = "dg-test-" + secrets.token_hex(16)
LIBRI = "librispeech_test-other_1688-142285-0001.flac"
WAV = "ljspeech_LJ002-0020.wav"
TTS = "deepgram/aura-2"
transcribe_json = functools.partial(transcribe, model="deepgram/nova-3")


@pytest.fixture(scope="module")
def fake():
    yield from serve(DeepgramFake(KEY))


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    catalog = {
        "providers": {"deepgram": {"name": "Deepgram", "adapter": "deepgram", "base_url": fake.url + "/v1",
                                   "api_key_env": "AR_TEST_DEEPGRAM_KEY", "timeout_s": 3}},
        "models": [{"id": "test/aura-2-long", "name": "Aura-2 without a text limit", "kind": "speech",
                    "voices": ["thalia", "celeste-es"],
                    "endpoints": [{"provider": "deepgram", "upstream_model": "aura-2",
                                   "output_formats": ["mp3", "wav", "pcm", "flac", "opus", "aac"]}]}],
    }
    yield from start_gateway(tmp_path_factory.mktemp("gw-deepgram"), catalog, AR_TEST_DEEPGRAM_KEY=KEY)


@pytest.fixture
def api(gw, fake):
    yield from api_client(gw, fake)


def listen_calls(fake):
    return [c for c in fake.calls if c.path == "/v1/listen"]


def speak_calls(fake):
    return [c for c in fake.calls if c.path == "/v1/speak"]


# ---- transcription --------------------------------------------------------------------------------------
def test_prerecorded_request_and_punctuated_text(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac")
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert norm(text) == norm(row(manifest, LIBRI)["text"])
    assert text.endswith(".") and text[0].isupper()  # smart_format / punctuate output is used
    (call,) = listen_calls(fake)
    assert call.headers["authorization"] == f"Token {KEY}"
    assert call.headers["content-type"] == "audio/flac"
    assert call.body == (DEV_AUDIO / LIBRI).read_bytes()
    assert call.q1("model") == "nova-3"
    for flag in ("smart_format", "punctuate", "utterances", "detect_language"):
        assert call.q1(flag) == "true", flag
    assert call.q1("language") is None and call.q1("diarize") is None
    assert r.headers["x-provider"] == "deepgram"


def test_language_diarize_keyterms_verbose_json(api, fake, manifest):
    r = transcribe_json(api, WAV, "wav", language="en", response_format="verbose_json",
                        timestamp_granularities=["word", "segment"], diarize=True, keyterms=["Newgate", "prison"])
    assert r.status_code == 200, r.text
    (call,) = listen_calls(fake)
    assert call.q1("language") == "en" and call.q1("detect_language") is None
    assert call.q1("diarize") == "true"
    assert [v for k, v in call.query if k == "keyterm"] == ["Newgate", "prison"]
    assert call.headers["content-type"] == "audio/wav"
    body = r.json()
    ref = norm(row(manifest, WAV)["text"]).split()
    assert [norm(w["word"]) for w in body["words"]] == ref
    assert {w["speaker"] for w in body["words"]} == {"speaker_0", "speaker_1"}
    # segments are Deepgram's utterances: in order, one speaker each, covering every word
    segs = body["segments"]
    assert len(segs) >= 2 and all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(segs))
    assert {s["speaker"] for s in segs} == {"speaker_0", "speaker_1"}
    assert norm(" ".join(s["text"] for s in segs)) == " ".join(ref)
    assert body["language"] == "en"


def test_openai_multipart_language(api, fake, manifest):
    with open(DEV_AUDIO / WAV, "rb") as f:
        r = api.post("/v1/audio/transcriptions", files={"file": (WAV, f, "audio/wav")},
                     data={"model": "deepgram/nova-3", "language": "en", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    assert r.json()["language"] == "english" and norm(r.json()["text"]) == norm(row(manifest, WAV)["text"])
    assert listen_calls(fake)[0].q1("language") == "en"


def test_detected_language_is_reported(api, fake, manifest):
    name = next(r["file"] for r in manifest if r["language"] == "de" and r["container"] == "wav")
    r = transcribe_json(api, name, "wav", response_format="verbose_json")
    assert r.status_code == 200, r.text
    assert r.json()["language"] == "de"


def test_headerless_pcm_is_described_to_deepgram(api, fake, manifest):
    with av.open(str(DEV_AUDIO / LIBRI)) as c:
        rs = av.AudioResampler(format="s16", layout="mono", rate=16000)
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for fr in c.decode(audio=0) for f in rs.resample(fr))
    r = api.post("/api/v1/audio/transcriptions",
                 json={"model": "deepgram/nova-3", "input_audio": {"data": b64(pcm), "format": "pcm"}})
    assert r.status_code == 200, r.text
    (call,) = listen_calls(fake)
    assert (call.q1("encoding"), call.q1("sample_rate"), call.q1("channels")) == ("linear16", "16000", "1")
    assert call.body == pcm
    assert abs(call.info["duration"] - row(manifest, LIBRI)["duration_s"]) < 0.05


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_and_subtitle_formats(api, manifest, fmt):
    r = transcribe_json(api, LIBRI, "flac", response_format=fmt)
    check_text_or_subtitles(r, fmt, row(manifest, LIBRI)["text"], row(manifest, LIBRI)["duration_s"])


def test_options_pass_through_and_unknown_option_is_a_400(api, fake):
    r = transcribe_json(api, LIBRI, "flac", provider={"options": {"deepgram": {"numerals": True, "language": "multi"}}})
    assert r.status_code == 200, r.text
    (call,) = listen_calls(fake)
    assert call.q1("numerals") == "true" and call.q1("language") == "multi"
    r = transcribe_json(api, LIBRI, "flac", provider={"options": {"deepgram": {"callback": "http://evil"}}})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "provider.options.deepgram.callback"
    assert len(listen_calls(fake)) == 1


# ---- errors ---------------------------------------------------------------------------------------------
ERROR_CASES = [
    ("401", lambda f: f.fail(401, "Invalid credentials."), 502, "upstream_error"),
    ("402", lambda f: f.fail(402, "Project does not have enough credits for an API request."), 502, "upstream_error"),
    ("403", lambda f: f.fail(403, "Insufficient permissions."), 502, "upstream_error"),
    ("429", lambda f: f.fail(429, "Too many requests. Please try again later."), 429, "upstream_error"),
    ("500", lambda f: f.fail(500, "An internal server error occurred."), 502, "upstream_error"),
    ("400", lambda f: f.fail(400, "Bad Request: failed to process audio: corrupt or unsupported data"), 400,
     "invalid_request_error"),
    ("notjson", lambda f: f.malformed(), 502, "upstream_error"),
    ("badshape", lambda f: f.fail_raw(200, b'{"results": {"channels": [{"alternatives": []}]}}'), 502,
     "upstream_error"),
    ("timeout", lambda f: f.timeout(6), 504, "timeout_error"),
]


@pytest.mark.parametrize("dialect", ["openrouter", "openai"])
@pytest.mark.parametrize("case,inject,status,etype", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_transcription_errors_map_to_the_dialect_envelope(api, fake, dialect, case, inject, status, etype):
    inject(fake)
    r = transcribe_json(api, LIBRI, "flac", dialect=dialect)
    check_error(r, status, dialect=dialect, etype=etype, provider="deepgram", secrets=(KEY,))


def test_error_message_comes_from_err_msg_without_the_key(api, fake):
    fake.fail(401, f"Invalid credentials for token {KEY}.")
    r = transcribe_json(api, LIBRI, "flac")
    assert r.status_code == 502
    err = r.json()["error"]
    assert "Invalid credentials" in err["message"] and KEY not in r.text
    assert err["metadata"]["upstream_status"] == 401


# ---- speech ---------------------------------------------------------------------------------------------
def speak(api, path="/api/v1/audio/speech", **body):
    return api.post(path, json={"model": TTS, "input": "Hello from Deepgram, twice over.", **body})


def test_mp3_is_passed_through_from_aura(api, fake):
    r = speak(api, voice="thalia", response_format="mp3")
    assert r.status_code == 200, r.text
    (call,) = speak_calls(fake)
    assert call.headers["authorization"] == f"Token {KEY}"
    assert call.q1("model") == "aura-2-thalia-en" and call.q1("encoding") == "mp3"
    assert call.q1("sample_rate") is None  # not configurable for mp3: Deepgram rejects it
    assert call.json == {"text": "Hello from Deepgram, twice over."}
    assert r.content == call.reply_bytes
    assert r.headers["content-type"] == "audio/mpeg" and r.headers["x-provider"] == "deepgram"


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_pcm_and_wav_come_from_raw_linear16(api, fake, fmt):
    r = speak(api, voice="Andromeda", response_format=fmt)
    assert r.status_code == 200, r.text
    (call,) = speak_calls(fake)
    assert call.q1("model") == "aura-2-andromeda-en"
    assert (call.q1("encoding"), call.q1("container"), call.q1("sample_rate")) == ("linear16", "none", "24000")
    if fmt == "pcm":
        assert r.content == call.reply_bytes  # passed through untouched
    else:
        assert r.content[:4] == b"RIFF"
        got, want = np.frombuffer(r.content[44:], "<i2"), np.frombuffer(call.reply_bytes, "<i2")
        assert len(got) == len(want) and np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.parametrize("fmt,container", [("opus", "ogg"), ("flac", "flac"), ("aac", "aac")])
def test_compressed_formats(api, fake, fmt, container):
    r = speak(api, "/v1/audio/speech", voice="apollo", response_format=fmt)
    assert r.status_code == 200, r.text
    (call,) = speak_calls(fake)
    if fmt in ("opus", "flac"):  # made by Deepgram, passed through
        assert call.q1("encoding") == fmt and r.content == call.reply_bytes
    else:  # made by the gateway from Deepgram's raw PCM
        assert call.q1("encoding") == "linear16"
    with av.open(io.BytesIO(r.content)) as c:
        assert container in c.format.name
        n = sum(f.samples for f in c.decode(audio=0))
        seconds = n / c.streams.audio[0].rate
    assert abs(seconds - 0.05 * len("Hello from Deepgram, twice over.")) < 0.1


def test_text_over_the_limit_is_spoken_in_pieces(api, fake):
    sentence = "This sentence is here to make the text long enough for two requests. "
    text = sentence * 40  # 2,800 characters: more than one Aura request takes
    r = api.post("/api/v1/audio/speech", json={"model": "test/aura-2-long", "input": text, "voice": "thalia",
                                               "response_format": "pcm"})
    assert r.status_code == 200, r.text
    calls = speak_calls(fake)
    assert len(calls) == 2 and all(len(c.json["text"]) <= 2000 for c in calls)
    assert " ".join(c.json["text"] for c in calls) == text.strip()
    assert all(c.json["text"].endswith(".") for c in calls)  # cut at sentence ends
    assert r.content == b"".join(c.reply_bytes for c in calls)


def test_voice_with_language(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": "test/aura-2-long", "input": "Hola a todos.",
                                               "voice": "celeste-es", "response_format": "mp3"})
    assert r.status_code == 200, r.text
    assert speak_calls(fake)[0].q1("model") == "aura-2-celeste-es"


SPEECH_ERRORS = [
    ("401", lambda f: f.fail(401, "Invalid credentials."), 502),
    ("429", lambda f: f.fail(429, "Too many requests."), 429),
    ("503", lambda f: f.fail(503, "Service unavailable."), 503),
    ("400", lambda f: f.fail(400, "Text contains unsupported characters."), 400),
    ("html", lambda f: f.malformed(), 502),
    ("json200", lambda f: f.fail_raw(200, b'{"err_msg": "queued"}'), 502),
    ("empty", lambda f: f.fail_raw(200, b"", "audio/mpeg"), 502),
    ("timeout", lambda f: f.timeout(6), 504),
]


@pytest.mark.parametrize("case,inject,status", SPEECH_ERRORS, ids=[c[0] for c in SPEECH_ERRORS])
def test_speech_errors(api, fake, case, inject, status):
    inject(fake)
    r = speak(api, "/v1/audio/speech", voice="thalia")
    check_error(r, status, dialect="openai", secrets=(KEY,))


def test_no_secret_in_server_log(api, fake, gw):
    fake.fail(401, f"bad token {KEY}")
    transcribe_json(api, LIBRI, "flac")
    speak(api, voice="thalia")
    assert_not_logged(gw, KEY)



def test_diarized_json_in_openai_shape(api, fake, manifest):
    """response_format=diarized_json: Deepgram diarizes (utterances with speaker 0/1) and the answer is
    OpenAI's TranscriptionDiarized, speakers A and B in order of appearance."""
    r = transcribe_json(api, WAV, "wav", response_format="diarized_json")
    assert r.status_code == 200, r.text
    (call,) = listen_calls(fake)
    assert call.q1("diarize") == "true"
    body = r.json()
    assert set(body) == {"task", "duration", "text", "segments", "usage"} and body["task"] == "transcribe"
    segs = body["segments"]
    assert next(s["speaker"] for s in segs) == "A" and {s["speaker"] for s in segs} == {"A", "B"}
    assert all(s["type"] == "transcript.text.segment" and s["start"] <= s["end"] for s in segs)
    assert norm(" ".join(s["text"] for s in segs)) == norm(row(manifest, WAV)["text"])


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_carry_the_speakers(api, fake, manifest, fmt):
    r = transcribe_json(api, WAV, "wav", response_format=fmt, diarize=True)
    assert r.status_code == 200, r.text
    text = [ln for ln in r.text.splitlines() if ln and "-->" not in ln and not ln.isdigit() and ln != "WEBVTT"]
    if fmt == "srt":
        starts = [ln[:4] for ln in text if ln.startswith("[")]
        assert starts[0] == "[A] " and set(starts) == {"[A] ", "[B] "}
        spoken = " ".join(ln[4:] if ln.startswith("[") else ln for ln in text)
    else:
        assert all(ln.startswith(("<v A>", "<v B>")) and ln.endswith("</v>") for ln in text)
        assert text[0].startswith("<v A>") and any(ln.startswith("<v B>") for ln in text)
        spoken = " ".join(ln[5:-4] for ln in text)
    assert norm(spoken) == norm(row(manifest, WAV)["text"])
