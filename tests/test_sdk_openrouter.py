"""The official OpenRouter Python SDK (`openrouter`) against the running server, with only server_url changed.

The SDK retries 5XX answers and connection errors with backoff for up to an hour by default, so the client is
built with retry_config=None: a failure shows at once instead of hanging the suite."""
from __future__ import annotations

import base64
import io

import av
import pytest
from openrouter import OpenRouter, components, errors

from conftest import DEV_AUDIO
from wer import normalize, wer

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
SMALL_WAV = DEV_AUDIO / "asterisk_en_vm-nonumber.wav"
SMALL_WAV_TEXT = "I'm afraid i don't know who sent this message"


@pytest.fixture(scope="module")
def orc(server) -> OpenRouter:
    with OpenRouter(api_key="sk-or-v1-test", server_url=server.url + "/api/v1", retry_config=None,
                    timeout_ms=300_000) as c:
        yield c


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_create_transcription(orc):
    r = orc.stt.create_transcription(model="google/chirp-3", input_audio={"data": b64(SMALL_WAV), "format": "wav"})
    assert isinstance(r, components.STTResponse)
    assert wer([SMALL_WAV_TEXT], [r.text]).wer <= 0.2, r.text
    assert r.usage is not None and r.usage.cost == 0
    assert abs(r.usage.seconds - 2.995) < 0.05


def test_create_transcription_typed_input_and_options(orc):
    audio = components.STTInlineInputAudio(data=b64(JFK), format_="flac")
    r = orc.stt.create_transcription(model="openai/whisper-1", input_audio=audio, language="en", temperature=0,
                                     provider={"options": {"local": {}}})
    assert wer([JFK_TEXT], [r.text]).wer < 0.1, r.text
    assert abs(r.usage.seconds - 11.0) < 0.05


def test_create_transcription_verbose_words(orc):
    r = orc.stt.create_transcription(model="local/whisper-base", input_audio={"data": b64(JFK), "format": "flac"},
                                     response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert r.task == "transcribe" and r.language in ("en", "english")
    assert abs(r.duration - 11.0) < 0.05
    assert r.segments and r.words and len(r.words) >= 20
    prev = 0.0
    for w in r.words:
        assert prev - 1e-6 <= w.start <= w.end <= r.duration + 0.05
        prev = w.start
    assert normalize(" ".join(w.word for w in r.words)) == normalize(r.text)


async def test_create_transcription_async(orc):
    r = await orc.stt.create_transcription_async(model="openai/whisper-large-v3",
                                                 input_audio={"data": b64(SMALL_WAV), "format": "wav"})
    assert "message" in r.text.lower()


def test_bad_base64_is_a_400_naming_the_field(orc):
    with pytest.raises(errors.BadRequestResponseError) as ei:
        orc.stt.create_transcription(model="google/chirp-3", input_audio={"data": "%%% not base64 %%%", "format": "wav"})
    assert ei.value.data.error.code == 400
    assert "input_audio.data" in ei.value.data.error.message


def test_unknown_model_is_a_404(orc):
    with pytest.raises(errors.NotFoundResponseError) as ei:
        orc.stt.create_transcription(model="chirp-9", input_audio={"data": b64(SMALL_WAV), "format": "wav"})
    assert "model" in ei.value.data.error.message


def _decode(data: bytes, fmt: str) -> float:
    with av.open(io.BytesIO(data), format=fmt) as c:
        s = c.streams.audio[0]
        return sum(f.samples for f in c.decode(s)) / s.rate


def test_create_speech_default_pcm(orc):
    res = orc.tts.create_speech(model="openai/gpt-4o-mini-tts-2025-12-15", input="Hello from OpenRouter.",
                                voice="alloy")
    try:
        assert res.status_code == 200
        ctype = res.headers["content-type"]
        assert ctype.startswith("audio/pcm")
        rate = int(dict(p.strip().split("=") for p in ctype.split(";")[1:] if "=" in p).get("rate", 24000))
        pcm = res.read()
    finally:
        res.close()
    assert len(pcm) % 2 == 0
    assert 0.5 < len(pcm) / 2 / rate < 10


def test_create_speech_mp3_round_trip(orc):
    text = "The quick brown fox jumps over the lazy dog."
    res = orc.tts.create_speech(model="local/hibari", input=text, response_format="mp3", speed=1.0)
    try:
        assert res.headers["content-type"].startswith("audio/mpeg")
        mp3 = b"".join(res.iter_bytes())
    finally:
        res.close()
    assert 1.0 < _decode(mp3, "mp3") < 10
    r = orc.stt.create_transcription(model="local/whisper-base",
                                     input_audio={"data": base64.b64encode(mp3).decode(), "format": "mp3"})
    assert wer([text], [r.text]).wer <= 0.2, r.text


def test_create_speech_bad_voice_is_a_400(orc):
    with pytest.raises(errors.BadRequestResponseError) as ei:
        orc.tts.create_speech(model="openai/tts-1", input="hi", voice="not-a-voice")
    assert "voice" in ei.value.data.error.message


def test_models_list_and_get(orc):
    res = orc.models.list(output_modalities="transcription")
    ids = {m.id for m in res.result.data}
    assert {"google/chirp-3", "openai/whisper-1"} <= ids and "openai/tts-1" not in ids
    one = orc.models.get(author="openai", slug="tts-1")
    assert one.data.id == "openai/tts-1" and "alloy" in one.data.supported_voices
    eps = orc.endpoints.list(author="openai", slug="whisper-1")
    assert eps.data.id == "openai/whisper-1" and any(e.tag == "local" for e in eps.data.endpoints)
