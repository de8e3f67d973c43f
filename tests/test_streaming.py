"""Streaming both ways, parsed by the official openai SDK.

Transcription with stream=true answers Server-Sent Events in OpenAI's shape (transcript.text.delta with
`delta`, then transcript.text.done with `text` and `usage`): from the local engine segment by segment, from
chunked long audio chunk by chunk, and passed through from an upstream that streams itself (a fake OpenAI
gpt-4o-transcribe). Speech with stream_format "sse" answers speech.audio.delta / speech.audio.done events
whose audio, joined, is one valid file. Text longer than an endpoint's max_characters is split at sentences
and the audio joined into one valid file in every format."""
from __future__ import annotations

import base64
import io
import json

import av
import httpx
import numpy as np
import openai
import pytest
from openai._streaming import SSEDecoder

from audio_factory import load_clip, make_audio
from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import b64, gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake
from fakes.runner import Reply, hear, probe
from wer import wer

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
MULTI = DEV_AUDIO / "fasterwhisper_multilingual_en_de.mp3"  # 60 s, many segments
FIVE_SENTENCES = ("Welcome to the audio router demonstration, where every request finds a provider. "
                  "The gateway accepts speech and text from many clients. It routes each request to a provider. "
                  "Long audio is split at silences and stitched back together. Thank you for listening.")


NO_STORE = {"Cache-Control": "no-store"}  # the shared server keeps a transcript cache: every answer made afresh


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """Chunks of at most 30 s, for the long-audio streams (`slow`); the other local tests use the session's
    shared `server`."""
    tmp = tmp_path_factory.mktemp("streaming")
    s = ServerProcess(env={"AUDIOROUTER_CHUNK_SECONDS": "30", "AUDIOROUTER_CACHE_TTL_S": "0",
                           "AUDIOROUTER_DATA_DIR": str(tmp / "data")}, tmp=tmp).start()
    yield s
    s.stop()


@pytest.fixture
def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", timeout=600, max_retries=0)


@pytest.fixture
def shared_sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-unused", timeout=600, max_retries=0)


def collect(stream) -> tuple[list[str], object]:
    deltas, done = [], None
    for ev in stream:
        if ev.type == "transcript.text.delta":
            assert done is None, "a delta after done"
            deltas.append(ev.delta)
        elif ev.type == "transcript.text.done":
            done = ev
    assert done is not None, "no transcript.text.done event"
    return deltas, done


# ---- transcription -------------------------------------------------------------------------------------
@pytest.mark.slow  # a minute of audio
def test_local_stream_segment_by_segment(sdk):
    with open(MULTI, "rb") as f:
        stream = sdk.audio.transcriptions.create(model="local/whisper-base", file=f, stream=True)
        deltas, done = collect(stream)
    assert len(deltas) >= 3, deltas  # one per finished segment, not one at the end
    assert "".join(deltas) == done.text
    assert done.text and done.usage.type == "duration" and done.usage.seconds > 55


def test_stream_json_dialect_and_text_matches_non_streaming(server):
    body = {"model": "local/whisper-base", "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}}
    with httpx.Client(base_url=server.url, timeout=300, headers=NO_STORE) as c:
        plain = c.post("/api/v1/audio/transcriptions", json=body).json()
        with c.stream("POST", "/api/v1/audio/transcriptions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-generation-id"].startswith("gen-")
            events = [json.loads(e.data) for e in SSEDecoder().iter_bytes(r.iter_bytes())]
    types = [e["type"] for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    done = events[-1]
    assert done["text"] == plain["text"] == "".join(e["delta"] for e in events[:-1])
    assert done["usage"]["cost"] == 0 and abs(done["usage"]["seconds"] - 11.0) < 0.05


@pytest.mark.slow  # a minute of audio, twice
def test_chunked_long_audio_streams_in_order(sdk):
    parts = [load_clip(p) for p in sorted(DEV_AUDIO.glob("librispeech_test-other_1688-*.flac"))[:8]]
    gap = np.zeros(8000, np.float32)
    samples = np.concatenate([x for p in parts for x in (p, gap)])
    data = make_audio(samples, "flac")
    stream = sdk.audio.transcriptions.create(model="local/whisper-base", stream=True,
                                             file=("long.flac", io.BytesIO(data), "audio/flac"))
    deltas, done = collect(stream)
    assert len(samples) / 16000 > 60
    assert len(deltas) >= 3
    assert "".join(deltas) == done.text
    plain = sdk.audio.transcriptions.create(model="local/whisper-base", response_format="json",
                                            file=("long.flac", io.BytesIO(data), "audio/flac"))
    assert wer([plain.text], [done.text]).wer < 0.02


def test_stream_bad_input_is_a_plain_4xx(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFF0000WAVEjunk", "audio/wav")},
                   data={"model": "local/whisper-base", "stream": "true"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["param"] == "file"
        r = c.post("/v1/audio/transcriptions", files={"file": ("j.flac", JFK.read_bytes(), "audio/flac")},
                   data={"model": "local/whisper-base", "stream": "true", "response_format": "srt"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
        r = c.post("/v1/audio/transcriptions", files={"file": ("j.flac", JFK.read_bytes(), "audio/flac")},
                   data={"model": "local/whisper-base", "stream": "maybe"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


# ---- upstream pass-through -----------------------------------------------------------------------------
class StreamingOpenAIFake(OpenAIFake):
    """OpenAI's gpt-4o-transcribe with stream=true: one transcript.text.delta per word, then done."""

    def transcribe(self, call, task):
        if call.f1("stream") != "true":
            return super().transcribe(call, task)
        checked = self.check_transcription(call, task)
        if isinstance(checked, Reply):
            return checked
        model, _fmt, _, info = checked
        if not model.startswith("gpt-4o"):
            return self.reject(400, "stream is not supported for whisper-1", param="stream")
        heard = hear(self.script, info.duration)
        words = heard.text.split()
        events = [{"type": "transcript.text.delta", "delta": (" " if i else "") + w} for i, w in enumerate(words)]
        tin, tout = int(info.duration * 12), len(words) * 2
        events.append({"type": "transcript.text.done", "text": heard.text,
                       "usage": {"type": "tokens", "input_tokens": tin, "output_tokens": tout,
                                 "total_tokens": tin + tout}})
        call.info["deltas"] = len(words)
        return Reply(200, headers={"Content-Type": "text/event-stream"},
                     chunks=[f"data: {json.dumps(e)}\n\n".encode() for e in events])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    fake = StreamingOpenAIFake().start()
    tmp = tmp_path_factory.mktemp("streaming-upstream")
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    ep = {"provider": "openai", "upstream_model": "gpt-4o-transcribe",
          "pricing": {"per_million_input_tokens": 6.0, "per_million_output_tokens": 10.0},
          "capabilities": {"verbose_json": False, "prompt": True, "streaming": True}}
    models = [
        {"id": "openai/gpt-4o-transcribe", "name": "GPT-4o Transcribe", "kind": "transcription", "endpoints": [ep]},
        {"id": "test/gpt-4o-30s", "name": "GPT-4o Transcribe, 30 s chunks", "kind": "transcription",
         "endpoints": [{**ep, "limits": {"max_seconds": 30}}]},
        {"id": "test/tts-short", "name": "TTS with an 80-character limit", "kind": "speech", "voices": ["alloy"],
         "endpoints": [{"provider": "openai", "upstream_model": "tts-1", "pricing": {"per_million_characters": 15.0},
                        "output_formats": ["mp3", "opus", "aac", "flac", "wav", "pcm"],
                        "limits": {"max_characters": 80}, "capabilities": {"speed": True, "streaming": True}}]},
    ]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    env = gateway_env(cat, tmp, OPENAI_API_KEY=fake.api_key, AUDIOROUTER_RETRY_ATTEMPTS="1",
                      AUDIOROUTER_MAX_SPEECH_CHARS="8000")
    s = ServerProcess(env=env, tmp=tmp).start()
    yield s, fake
    s.stop()
    fake.stop()


def test_upstream_stream_passes_through(upstream):
    gw, fake = upstream
    fake.clear()
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", timeout=120, max_retries=0)
    with open(JFK, "rb") as f:
        deltas, done = collect(sdk.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f, stream=True))
    assert not fake.violations, fake.violations
    (call,) = fake.calls
    assert call.f1("stream") == "true"
    assert len(deltas) == call.info["deltas"] > 5  # the upstream's own deltas, one per word
    assert "".join(deltas) == done.text == fake.script
    assert done.usage.type == "tokens" and done.usage.input_tokens == int(11.0 * 12)
    cost = done.usage.input_tokens * 6e-6 + done.usage.output_tokens * 10e-6
    assert done.usage.model_extra["cost"] == pytest.approx(cost)


def test_upstream_stream_chunked(upstream):
    gw, fake = upstream
    fake.clear()
    samples = np.concatenate([load_clip(JFK)] * 7)  # 77 s -> 3 chunks of <= 30 s
    data = make_audio(samples, "flac")
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", timeout=120, max_retries=0)
    deltas, done = collect(sdk.audio.transcriptions.create(
        model="test/gpt-4o-30s", stream=True, file=("long.flac", io.BytesIO(data), "audio/flac")))
    calls = fake.calls
    assert len(calls) >= 3 and all(c.f1("stream") == "true" for c in calls)
    assert all(probe(c.files["file"][2]).duration <= 30.0 for c in calls)
    assert done.text == " ".join([fake.script] * len(calls)) == "".join(deltas)
    assert len(deltas) >= sum(c.info["deltas"] for c in calls)


def test_upstream_stream_failure_midway_is_an_error_event(upstream):
    gw, fake = upstream
    fake.clear()
    fake.cut_stream(after_chunks=3)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", timeout=120, max_retries=0)
    got = []
    with pytest.raises(openai.APIError):
        with open(JFK, "rb") as f:
            for ev in sdk.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=f, stream=True):
                got.append(ev)
    assert len(fake.calls) == 1  # nothing is retried once text has gone out
    assert got and all(e.type == "transcript.text.delta" for e in got)


# ---- speech ---------------------------------------------------------------------------------------------
def sse_events(raw_chunks) -> list[dict]:
    return [json.loads(e.data) for e in SSEDecoder().iter_bytes(raw_chunks)]


@pytest.mark.parametrize("fmt", ["pcm", "mp3", "wav"])
def test_speech_sse_with_openai_sdk(shared_sdk, fmt):
    with shared_sdk.audio.speech.with_streaming_response.create(model="local/hibari", voice="heart", input=FIVE_SENTENCES,
                                                         response_format=fmt, stream_format="sse") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.iter_bytes())
    types = [e["type"] for e in events]
    assert types[-1] == "speech.audio.done" and set(types[:-1]) == {"speech.audio.delta"}
    assert len(types) >= 3  # sentence by sentence
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    usage = events[-1]["usage"]
    assert usage["input_tokens"] >= 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    if fmt == "pcm":
        seconds = len(audio) / 2 / 24000
    else:
        with av.open(io.BytesIO(audio)) as c:
            seconds = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert 8 < seconds < 40


def test_speech_first_bytes_before_the_end(server):
    """The raw stream arrives in several pieces (the first sentence is sent before the rest is made)."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with c.stream("POST", "/api/v1/audio/speech", json={"model": "local/hibari", "input": FIVE_SENTENCES}) as r:
            assert r.status_code == 200
            pieces = [len(x) for x in r.iter_raw() if x]
    assert len(pieces) >= 3 and pieces[0] < sum(pieces) / 2


LONG_TEXT = " ".join(f"This is sentence number {i} of a text that is longer than the endpoint accepts." for i in range(1, 9))


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "flac", "opus", "aac"])
def test_speech_text_over_max_characters_is_split_and_joined(upstream, fmt):
    gw, fake = upstream
    fake.clear()
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        r = c.post("/v1/audio/speech", json={"model": "test/tts-short", "voice": "alloy", "input": LONG_TEXT,
                                             "response_format": fmt})
    assert r.status_code == 200, r.text
    calls = [x for x in fake.calls if x.path.endswith("/audio/speech")]
    assert len(calls) >= len(LONG_TEXT) // 80
    assert all(len(x.json["input"]) <= 80 for x in calls)
    assert " ".join(x.json["input"] for x in calls) == LONG_TEXT
    expected = sum(x.info["seconds"] for x in calls)
    if fmt == "pcm":
        seconds = len(r.content) / 2 / 24000
    else:
        p = probe(r.content)  # one valid file, decodable to the end
        seconds = p.duration
    assert abs(seconds - expected) < 0.25 + 0.05 * len(calls), (seconds, expected)
    assert float(r.headers["x-cost"]) == pytest.approx(15.0 * len(LONG_TEXT) / 1e6)
