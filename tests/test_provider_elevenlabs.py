"""The ElevenLabs adapter (Scribe speech-to-text, streaming text-to-speech) through audiorouter's HTTP API,
against a fake ElevenLabs speaking the real wire protocol (tests/fakes/elevenlabs_fake.py)."""
from __future__ import annotations

import functools
import io
import secrets

import av
import pytest

from conftest import DEV_AUDIO
from fakes.elevenlabs_fake import ElevenLabsFake
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

KEY = "xi-test-" + secrets.token_hex(16)
LIBRI = "librispeech_test-other_1688-142285-0003.flac"
MP3 = "common_voice_en_16812.mp3"
STT = "elevenlabs/scribe-v1"
TTS = "elevenlabs/eleven-flash-v2.5"
RACHEL = "21m00Tcm4TlvDq8ikWAM"
transcribe_json = functools.partial(transcribe, model=STT)


@pytest.fixture(scope="module")
def fake():
    yield from serve(ElevenLabsFake(KEY))


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    catalog = {"providers": {"elevenlabs": {"name": "ElevenLabs", "adapter": "elevenlabs", "base_url": fake.url,
                                            "api_key_env": "AR_TEST_XI_KEY", "timeout_s": 3}},
               "models": [{"id": "test/scribe-v2", "name": "Scribe v2", "kind": "transcription", "endpoints": [
                   {"provider": "elevenlabs", "upstream_model": "scribe_v2",
                    "capabilities": {"word_timestamps": True, "diarization": True, "keyterms": True}}]}]}
    yield from start_gateway(tmp_path_factory.mktemp("gw-elevenlabs"), catalog, AR_TEST_XI_KEY=KEY)


@pytest.fixture
def api(gw, fake):
    yield from api_client(gw, fake)


def stt_calls(fake):
    return [c for c in fake.calls if c.path == "/v1/speech-to-text"]


def tts_calls(fake):
    return [c for c in fake.calls if c.path.startswith("/v1/text-to-speech/")]


# ---- speech-to-text -------------------------------------------------------------------------------------
def test_multipart_upload_and_transcript(api, fake, manifest):
    with open(DEV_AUDIO / MP3, "rb") as f:
        r = api.post("/v1/audio/transcriptions", files={"file": (MP3, f, "audio/mpeg")}, data={"model": STT})
    assert r.status_code == 200, r.text
    assert norm(r.json()["text"]) == norm(row(manifest, MP3)["text"])
    assert "(" not in r.json()["text"]  # audio-event tags are off unless asked for
    (call,) = stt_calls(fake)
    assert call.headers["xi-api-key"] == KEY and "authorization" not in call.headers
    assert call.form["model_id"] == ["scribe_v1"]
    assert call.form["timestamps_granularity"] == ["word"]
    assert call.form["diarize"] == ["false"] and call.form["tag_audio_events"] == ["false"]
    assert "language_code" not in call.form and "temperature" not in call.form
    filename, ctype, data = call.files["file"]
    assert data == (DEV_AUDIO / MP3).read_bytes() and ctype == "audio/mpeg" and filename.endswith(".mp3")
    assert r.headers["x-provider"] == "elevenlabs"


def test_language_temperature_and_iso639_3_answer(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac", language="en", temperature=0.2, response_format="verbose_json")
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fake)
    assert call.form["language_code"] == ["en"] and float(call.form["temperature"][0]) == 0.2
    assert r.json()["language"] == "en"  # Scribe answered "eng"


def test_verbose_json_words_speakers_and_segments(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac", response_format="verbose_json",
                        timestamp_granularities=["word", "segment"], diarize=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert stt_calls(fake)[0].form["diarize"] == ["true"]
    ref = norm(row(manifest, LIBRI)["text"]).split()
    words = body["words"]
    assert [norm(w["word"]) for w in words] == ref  # spacing tokens are not words
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.01 for w in words)
    assert {w["speaker"] for w in words} == {"speaker_0", "speaker_1"}
    segs = body["segments"]
    assert {s["speaker"] for s in segs} == {"speaker_0", "speaker_1"}  # a new segment at the speaker change
    assert norm(" ".join(s["text"] for s in segs)) == " ".join(ref)
    assert [s["id"] for s in segs] == list(range(len(segs)))


def test_audio_events_on_request(api, fake, manifest):
    r = transcribe_json(api, LIBRI, "flac", provider={"options": {"elevenlabs": {"tag_audio_events": True,
                                                                                  "num_speakers": 2}}})
    assert r.status_code == 200, r.text
    call = stt_calls(fake)[0]
    assert call.form["tag_audio_events"] == ["true"] and call.form["num_speakers"] == ["2"]
    assert "(soft music)" in r.json()["text"]
    r = transcribe_json(api, LIBRI, "flac", provider={"options": {"elevenlabs": {"num_speakers": 99}}})
    assert r.status_code == 400 and "num_speakers" in r.json()["error"]["message"]


def test_headerless_pcm_uses_file_format(api, fake, manifest):
    with av.open(str(DEV_AUDIO / LIBRI)) as c:
        rs = av.AudioResampler(format="s16", layout="mono", rate=16000)
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for fr in c.decode(audio=0) for f in rs.resample(fr))
    r = api.post("/api/v1/audio/transcriptions",
                 json={"model": STT, "input_audio": {"data": b64(pcm), "format": "pcm"}})
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fake)
    assert call.form["file_format"] == ["pcm_s16le_16"] and call.files["file"][2] == pcm
    assert abs(call.info["duration"] - row(manifest, LIBRI)["duration_s"]) < 0.05


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_and_subtitle_formats(api, manifest, fmt):
    r = transcribe_json(api, LIBRI, "flac", response_format=fmt)
    check_text_or_subtitles(r, fmt, row(manifest, LIBRI)["text"], row(manifest, LIBRI)["duration_s"])


ERROR_CASES = [
    ("401", lambda f: f.fail(401, "Invalid API key"), 502, "upstream_error"),
    ("quota", lambda f: f.fail_raw(401, b'{"detail": {"status": "quota_exceeded", "message": "This request '
                                    b'exceeds your quota."}}'), 502, "upstream_error"),
    ("429", lambda f: f.fail(429, "Too many concurrent requests."), 429, "upstream_error"),
    ("500", lambda f: f.fail(500, "Internal server error"), 502, "upstream_error"),
    ("422", lambda f: f.fail_raw(422, b'{"detail": [{"type": "missing", "loc": ["body", "model_id"], '
                                      b'"msg": "Field required", "input": null}]}'), 400, "invalid_request_error"),
    ("notjson", lambda f: f.malformed(), 502, "upstream_error"),
    ("badshape", lambda f: f.fail_raw(200, b'{"text": null, "words": "none"}'), 502, "upstream_error"),
    ("timeout", lambda f: f.timeout(6), 504, "timeout_error"),
]


@pytest.mark.parametrize("dialect", ["openrouter", "openai"])
@pytest.mark.parametrize("case,inject,status,etype", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_transcription_errors_map_to_the_dialect_envelope(api, fake, dialect, case, inject, status, etype):
    inject(fake)
    r = transcribe_json(api, LIBRI, "flac", dialect=dialect)
    check_error(r, status, dialect=dialect, etype=etype, provider="elevenlabs", secrets=(KEY,))


def test_error_messages_from_both_detail_shapes(api, fake):
    fake.fail(401, f"Invalid API key: {KEY}")
    r = transcribe_json(api, LIBRI, "flac")
    err = r.json()["error"]
    assert r.status_code == 502 and "Invalid API key" in err["message"] and KEY not in r.text
    assert err["metadata"]["upstream_code"] == "invalid_api_key"
    fake.fail_raw(422, b'{"detail": [{"type": "less_than_equal", "loc": ["body", "temperature"], '
                       b'"msg": "Input should be less than or equal to 2", "input": "3"}]}')
    r = transcribe_json(api, LIBRI, "flac")
    assert r.status_code == 400
    assert "temperature: Input should be less than or equal to 2" in r.json()["error"]["message"]


# ---- text-to-speech -------------------------------------------------------------------------------------
TEXT = "Hello from ElevenLabs, streamed as it is spoken."


def test_mp3_stream_with_mapped_voice_id(api, fake):
    r = api.post("/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "rachel"})
    assert r.status_code == 200, r.text
    (call,) = tts_calls(fake)
    assert call.path == f"/v1/text-to-speech/{RACHEL}/stream"
    assert call.q1("output_format") == "mp3_44100_128"
    assert call.headers["xi-api-key"] == KEY
    assert call.json == {"text": TEXT, "model_id": "eleven_flash_v2_5"}  # no voice_settings at speed 1
    assert r.content == call.reply_bytes and r.headers["content-type"] == "audio/mpeg"


def test_pcm_and_speed(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Adam", "speed": 1.15,
                                               "response_format": "pcm"})
    assert r.status_code == 200, r.text
    (call,) = tts_calls(fake)
    assert call.path == "/v1/text-to-speech/pNInz6obpgDQGcFmaJgB/stream"
    assert call.q1("output_format") == "pcm_24000"
    assert call.json["voice_settings"] == {"speed": 1.15}
    assert r.content == call.reply_bytes
    assert "rate=24000" in r.headers["content-type"]


@pytest.mark.parametrize("fmt,container", [("wav", "wav"), ("opus", "ogg"), ("flac", "flac")])
def test_other_formats_are_encoded_from_pcm(api, fake, fmt, container):
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Bella", "response_format": fmt})
    assert r.status_code == 200, r.text
    (call,) = tts_calls(fake)
    assert call.q1("output_format") == "pcm_24000"
    with av.open(io.BytesIO(r.content)) as c:
        assert container in c.format.name
        n = sum(f.samples for f in c.decode(audio=0))
        seconds = n / c.streams.audio[0].rate
    assert abs(seconds - len(call.reply_bytes) / 48000) < 0.1


def test_speed_out_of_range_is_a_clear_400(api, fake):
    r = api.post("/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Antoni", "speed": 2.0})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "speed" and "0.7" in r.json()["error"]["message"]
    assert not tts_calls(fake)


def test_voice_settings_options(api, fake):
    r = api.post("/api/v1/audio/speech", json={
        "model": TTS, "input": TEXT, "voice": "Antoni",
        "provider": {"options": {"elevenlabs": {"stability": 0.4, "similarity_boost": 0.8, "language_code": "en"}}}})
    assert r.status_code == 200, r.text
    call = tts_calls(fake)[0]
    assert call.json["voice_settings"] == {"stability": 0.4, "similarity_boost": 0.8}
    assert call.json["language_code"] == "en"
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Antoni",
                                               "provider": {"options": {"elevenlabs": {"stability": 3}}}})
    assert r.status_code == 400 and "stability" in r.json()["error"]["message"]


SPEECH_ERRORS = [
    ("401", lambda f: f.fail(401, "Invalid API key"), 502),
    ("voice", lambda f: f.fail_raw(404, b'{"detail": {"status": "voice_not_found", "message": "A voice with '
                                    b'the voice_id x was not found."}}'), 502),
    ("429", lambda f: f.fail(429, "Too many concurrent requests."), 429),
    ("500", lambda f: f.fail(500, "Internal server error"), 502),
    ("400", lambda f: f.fail(400, "Text contains no speakable characters."), 400),
    ("html", lambda f: f.malformed(), 502),
    ("empty", lambda f: f.fail_raw(200, b"", "audio/mpeg"), 502),
    ("timeout", lambda f: f.timeout(6), 504),
]


@pytest.mark.parametrize("case,inject,status", SPEECH_ERRORS, ids=[c[0] for c in SPEECH_ERRORS])
def test_speech_errors(api, fake, case, inject, status):
    inject(fake)
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel"})
    check_error(r, status, dialect="openrouter", secrets=(KEY,))


def test_no_secret_in_server_log(api, fake, gw):
    fake.fail(401, f"Invalid API key {KEY}")
    transcribe_json(api, LIBRI, "flac")
    api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel"})
    assert_not_logged(gw, KEY)


def test_scribe_v2_keyterms_are_one_json_array_field(api, fake):
    r = transcribe_json(api, "jfk_inaugural_excerpt.flac", "flac", model="test/scribe-v2",
                        keyterms=["fellow Americans", "Kennedy"])
    assert r.status_code == 200, r.text
    (call,) = stt_calls(fake)
    assert len(call.form["keyterms"]) == 1 and call.info["keyterms"] == ["fellow Americans", "Kennedy"]


def test_custom_voice_id_goes_to_the_url_as_it_is(api, fake):
    r = api.post("/v1/audio/speech", json={"model": "elevenlabs/eleven-flash-v2.5", "input": "Hello there.",
                                           "voice": {"id": "pNInz6obpgDQGcFmaJgB"}, "response_format": "mp3"})
    assert r.status_code == 200, r.text
    (call,) = tts_calls(fake)
    assert call.path == "/v1/text-to-speech/pNInz6obpgDQGcFmaJgB/stream"


def test_diarized_json_in_openai_shape(api, fake, manifest):
    import openai
    oc = openai.OpenAI(base_url=api.base_url.join("/v1").__str__(), api_key="unused", max_retries=0)
    with open(DEV_AUDIO / LIBRI, "rb") as f:
        t = oc.audio.transcriptions.create(model=STT, file=f, response_format="diarized_json")
    assert stt_calls(fake)[0].form["diarize"] == ["true"]
    assert next(s.speaker for s in t.segments) == "A" and {s.speaker for s in t.segments} == {"A", "B"}
    assert norm(" ".join(s.text for s in t.segments)) == norm(row(manifest, LIBRI)["text"])
