"""POST /api/v1/audio/speech and /v1/audio/speech on the local hibari engine: every output format decodes
to real audio of plausible length, defaults per dialect, speed in both directions, streaming (first bytes
leave while the engine is still synthesizing), OpenAI voice names, SSE events, and a round trip through
Whisper."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from audio_factory import decode_bytes, rms
from wer import normalize

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the forest to sleep."
LONG_TEXT = " ".join(f"This is sentence number {i}, and it keeps the speech engine busy for a while."
                     for i in range(1, 41))
MAGIC = {
    "mp3": lambda b: b[:3] == b"ID3" or (b[0] == 0xFF and b[1] & 0xE0 == 0xE0),
    "wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
    "flac": lambda b: b[:4] == b"fLaC",
    "opus": lambda b: b[:4] == b"OggS" and b"OpusHead" in b[:200],
    "aac": lambda b: b[0] == 0xFF and b[1] & 0xF6 == 0xF0,
}
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg",
                 "aac": "audio/aac", "pcm": "audio/pcm;rate=24000;channels=1"}


def speak(client, path="/api/v1/audio/speech", **body):
    body.setdefault("model", "local/hibari")
    body.setdefault("input", TEXT)
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text[:500]
    return r


def audio_of(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, 24000
    return decode_bytes(data)


@pytest.fixture(scope="module")
def pcm_reference(server):
    import httpx
    with httpx.Client(base_url=server.url, timeout=120) as c:
        r = speak(c)
    samples, rate = audio_of(r.content, "pcm")
    return len(samples) / rate


def test_pcm_is_the_default_on_openrouter_path(client, pcm_reference):
    r = speak(client)
    assert r.headers["content-type"] == "audio/pcm;rate=24000;channels=1"
    assert len(r.content) % 2 == 0
    samples, rate = audio_of(r.content, "pcm")
    # ~17 words of speech: a few seconds, not silence
    assert 2.0 < len(samples) / rate < 12.0
    assert rms(samples) > 0.01
    assert r.headers["x-characters"] == str(len(TEXT))


def test_mp3_is_the_default_on_openai_path(client, pcm_reference):
    r = speak(client, "/v1/audio/speech", model="tts-1", voice="alloy")
    assert r.headers["content-type"] == "audio/mpeg"
    assert MAGIC["mp3"](r.content)
    samples, rate = decode_bytes(r.content)
    assert abs(len(samples) / rate - pcm_reference) < 0.25


@pytest.mark.parametrize("fmt", ["pcm", "mp3", "wav", "flac", "opus", "aac"])
@pytest.mark.parametrize("path", ["/api/v1/audio/speech", "/v1/audio/speech"])
def test_every_format_decodes_to_the_same_speech(client, pcm_reference, fmt, path):
    r = speak(client, path, response_format=fmt)
    assert r.headers["content-type"].startswith(CONTENT_TYPES[fmt])
    if fmt != "pcm":
        assert MAGIC[fmt](r.content), r.content[:16]
    samples, rate = audio_of(r.content, fmt)
    duration = len(samples) / rate
    # lossy codecs add at most a frame or two of priming/padding
    assert abs(duration - pcm_reference) < 0.25, (fmt, duration, pcm_reference)
    assert rms(samples) > 0.01
    if fmt in ("pcm", "wav", "flac", "mp3", "aac"):
        assert rate == 24000
    else:
        assert rate == 48000  # Opus runs at 48 kHz


def test_wav_header_is_valid_for_streaming(client):
    r = speak(client, response_format="wav")
    b = r.content
    assert b[12:16] == b"fmt " and int.from_bytes(b[22:24], "little") == 1  # mono
    assert int.from_bytes(b[24:28], "little") == 24000
    assert int.from_bytes(b[34:36], "little") == 16


def test_speed_changes_duration_both_ways(client, pcm_reference):
    durations = {}
    for speed in (0.25, 1.0, 4.0):
        r = speak(client, speed=speed)
        samples, rate = audio_of(r.content, "pcm")
        durations[speed] = len(samples) / rate
        assert rms(samples) > 0.01
    assert durations[0.25] > durations[1.0] > durations[4.0]
    assert 2.5 < durations[0.25] / durations[1.0] < 5.5, durations
    assert 2.5 < durations[1.0] / durations[4.0] < 5.5, durations


def test_speed_as_string_and_bounds_inclusive(client):
    for speed in ("0.25", "4"):
        r = speak(client, "/v1/audio/speech", model="tts-1", speed=speed, response_format="pcm")
        assert len(r.content) > 0


def _local_pending(client) -> int:
    r = client.get("/health")
    assert r.status_code == 200
    return r.json()["local_queue"]["pending"]


def _wait_idle(client, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _local_pending(client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _local_pending(client) == 0, "the local speech queue never drained"


def test_streaming_first_bytes_leave_before_synthesis_ends(client):
    """Read the first chunk of a long text's audio, then ask /health: the synthesis job is still in the
    local pool, so those bytes left before the whole text was synthesized."""
    _wait_idle(client)
    with client.stream("POST", "/api/v1/audio/speech", json={"model": "local/hibari", "input": LONG_TEXT}) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        first = next(chunks)
        assert first
        pending_after_first_chunk = _local_pending(client)
        rest = sum(len(c) for c in chunks)
    assert pending_after_first_chunk >= 1
    total = len(first) + rest
    assert len(first) < total / 10  # the first chunk is a small part of the audio
    assert total / 48000 > 60  # 40 sentences: over a minute of speech
    _wait_idle(client)


def test_closing_a_stream_early_gives_the_slot_back(client):
    _wait_idle(client)
    with client.stream("POST", "/api/v1/audio/speech", json={"model": "local/hibari", "input": LONG_TEXT}) as r:
        next(r.iter_raw())
    _wait_idle(client)  # the slot is given back: nothing stays counted in the pool
    assert speak(client, input="Still here.").content


@pytest.mark.parametrize("voice", ["alloy", "nova", "onyx", "shimmer", "Echo"])
@pytest.mark.parametrize("model", ["local/hibari", "openai/tts-1"])
def test_openai_voice_names(client, model, voice):
    r = speak(client, "/v1/audio/speech", model=model, voice=voice, input="Hello.", response_format="wav")
    assert r.headers["x-provider"] == "local"
    if model == "openai/tts-1":
        assert r.headers["x-provider-substitute"] == "true"
    samples, rate = decode_bytes(r.content)
    assert len(samples) / rate > 0.3 and rms(samples) > 0.01


@pytest.mark.parametrize("model", ["local/hibari", "openai/tts-1"])
@pytest.mark.parametrize("path", ["/api/v1/audio/speech", "/v1/audio/speech"])
def test_unknown_voice(client, model, path):
    r = client.post(path, json={"model": model, "input": "Hello.", "voice": "darth"})
    assert r.status_code == 400
    err = r.json()["error"]
    param = err["param"] if path.startswith("/v1/") else err["metadata"]["param"]
    assert param == "voice"
    assert "darth" in err["message"]


def _sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        data = [line[len("data:"):].strip() for line in block.splitlines() if line.startswith("data:")]
        assert data, block
        events.append(json.loads("\n".join(data)))
    return events


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
@pytest.mark.parametrize("path", ["/api/v1/audio/speech", "/v1/audio/speech"])
def test_sse_events(client, pcm_reference, fmt, path):
    r = speak(client, path, stream_format="sse", response_format=fmt)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    assert len(events) >= 2
    *deltas, done = events
    assert all(e["type"] == "speech.audio.delta" for e in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert {"input_tokens", "output_tokens", "total_tokens"} <= set(usage)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    samples, rate = audio_of(audio, fmt)
    assert abs(len(samples) / rate - pcm_reference) < 0.25
    assert rms(samples) > 0.01


def test_round_trip_through_whisper(client):
    text = "Please call Stella. Ask her to bring these things with her from the store."
    wav = speak(client, "/v1/audio/speech", model="tts-1", voice="nova", input=text, response_format="wav").content
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1", "language": "en"},
                    files={"file": ("speech.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    heard = normalize(r.json()["text"])
    for words in ("please call stella", "bring these things", "from the store"):
        assert words in heard, heard
