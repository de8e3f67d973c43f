"""A fake Mistral audio API (https://docs.mistral.ai/api/#tag/audio) on 127.0.0.1.

Request shapes follow Mistral's Python SDK (mistralai/client-python, Speakeasy-generated, 2026: array form
fields are repeated under their plain name, no `[]`) and "Migrate from Voxtral 2" (docs.mistral.ai, read
2026-12-07: Voxtral 3 answers word timestamps with a 400).

POST /v1/audio/transcriptions: multipart with `file` (or file_url / file_id), `model`, `language`,
`temperature`, `diarize`, `stream`, repeated `context_bias` and `timestamp_granularities`. There is no
`prompt` or `response_format`, and no `name[]` fields: those are refused (422, like FastAPI's
extra-forbidden). A language hint combined with timestamps is refused (400), and so is `word` on the Voxtral
3 models (voxtral-mini-transcribe-3-0 and its aliases, and voxtral-mini-latest, which now names it). Answer:
{model, text, language, segments: [{text, start, end, type}], usage: {prompt_audio_seconds, prompt_tokens,
completion_tokens, total_tokens}}; with word granularity (voxtral-mini-2602) each segment is one word.
POST /v1/audio/speech: JSON {model, input, voice_id | ref_audio, response_format, stream}; `voice` (the
OpenAI name) is refused. Without stream: {"audio_data": base64}; with stream: SSE speech.audio.delta /
speech.audio.done. `pcm` is float32 little-endian mono at 24 kHz.
Auth: Bearer. Errors: {"object": "error", "message", "type", "param", "code"}; 422: {"detail": [...]}."""
from __future__ import annotations

import base64
import json
from typing import Any

from .openai_fake import DEFAULT_SCRIPT
from .runner import Call, FakeServer, Reply, encode_audio, hear, probe, split_chunks, tone

STT_FIELDS = {"file", "file_url", "file_id", "model", "language", "temperature", "stream", "diarize",
              "context_bias", "timestamp_granularities"}
VOXTRAL3_STT = {"voxtral-mini-latest", "voxtral-mini-transcribe-3-0", "voxtral-mini-transcribe-3",
                "voxtral-mini-transcribe-latest"}
STT_MODELS = VOXTRAL3_STT | {"voxtral-mini-2602", "voxtral-mini-2507"}
TTS_MODELS = {"voxtral-mini-tts-2603", "voxtral-mini-tts-latest", "voxtral-mini-tts-3-0", "voxtral-mini-tts-3"}
TTS_KEYS = {"model", "input", "voice_id", "ref_audio", "response_format", "stream", "metadata",
            "prompt_cache_key", "phoneme_hints"}
VOICES = {"en_paul_neutral", "gb_jane_neutral", "gb_oliver_neutral", "fr_marie_neutral", "voice_478",
          "voice_447", "voice_485", "voice_484", "voice_592"}
FORMATS = {"pcm", "wav", "mp3", "flac", "opus"}
RATE = 24000


class MistralFake(FakeServer):
    prefix = "/v1"

    def __init__(self, api_key: str = "mistral-test-key", script: str = DEFAULT_SCRIPT):
        super().__init__(api_key)
        self.script = script

    def error(self, status: int, message: str, **kw: Any) -> Reply:
        if status == 422:
            loc = kw.get("loc", ["body"])
            return Reply.json({"detail": [{"type": "extra_forbidden", "loc": loc, "msg": message}]}, 422)
        return Reply.json({"object": "error", "message": message,
                           "type": "invalid_request_error" if status < 500 else "internal_error",
                           "param": None, "code": str(status)}, status)

    def malformed_reply(self, call: Call) -> Reply:
        return Reply(200, b"<html>upstream connect error</html>", {"Content-Type": "text/html"})

    def handle(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "Unauthorized")
        if call.path == "/v1/audio/transcriptions":
            return self.transcribe(call)
        if call.path == "/v1/audio/speech":
            return self.speech(call)
        return self.reject(404, f"no route {call.path}")

    def transcribe(self, call: Call) -> Reply:
        if not call.headers.get("content-type", "").startswith("multipart/form-data"):
            return self.reject(400, "expected multipart/form-data")
        for name in list(call.form) + list(call.files):
            if name not in STT_FIELDS:
                return self.reject(422, "Extra inputs are not permitted", loc=["body", name])
        model = call.f1("model")
        if model not in STT_MODELS:
            return self.reject(400, f"Invalid model: {model}")
        if "file" not in call.files:
            return self.reject(400, "one of file, file_url or file_id is required")
        try:
            info = probe(call.files["file"][2])
        except ValueError as e:
            return self.reject(400, f"could not decode the audio: {e}")
        gran = call.form.get("timestamp_granularities", [])
        if any(g not in ("segment", "word") for g in gran):
            return self.reject(400, f"invalid timestamp_granularities {gran}")
        if "word" in gran and model in VOXTRAL3_STT:
            return self.reject(400, "timestamp_granularities: word timestamps are not supported by this model; "
                                    "use segment")
        if gran and call.f1("language"):
            return self.reject(400, "timestamp_granularities is not compatible with language")
        for term in call.form.get("context_bias", []):
            if not term or " " in term or "," in term:
                return self.reject(400, f"context_bias items must not contain spaces or commas: {term!r}")
        heard = hear(self.script, info.duration)
        call.info.update(probe=info, heard=heard)
        if "word" in gran:
            segments = [{"text": w, "start": s, "end": e, "type": "transcription_segment"} for w, s, e in heard.words]
        elif gran:
            segments = [{"text": t, "start": s, "end": e, "type": "transcription_segment"} for t, s, e in heard.segments]
        else:
            segments = []
        if call.f1("diarize") == "true":  # speaker_id on each segment (the SDK's diarize example), second half B
            half = len(segments) // 2
            for i, seg in enumerate(segments):
                seg["speaker_id"] = f"speaker_{int(i >= half)}"
        secs = round(info.duration)
        body = {"model": model, "text": heard.text, "language": call.f1("language") or "en", "segments": segments,
                "usage": {"prompt_audio_seconds": secs, "prompt_tokens": secs * 4,
                          "completion_tokens": len(heard.words), "total_tokens": secs * 4 + len(heard.words)}}
        call.reply_json = body
        return Reply.json(body)

    def speech(self, call: Call) -> Reply:
        body = call.json
        if not isinstance(body, dict):
            return self.reject(400, "expected a JSON body")
        for k in body:
            if k not in TTS_KEYS:
                return self.reject(422, "Extra inputs are not permitted", loc=["body", k])
        if body.get("model") not in TTS_MODELS:
            return self.reject(400, f"Invalid model: {body.get('model')}")
        if not isinstance(body.get("input"), str) or not body["input"].strip():
            return self.reject(400, "input is required")
        if body.get("voice_id") not in VOICES and not body.get("ref_audio"):
            return self.reject(400, f"unknown voice_id {body.get('voice_id')!r}")
        fmt = body.get("response_format", "mp3")
        if fmt not in FORMATS:
            return self.reject(400, f"invalid response_format {fmt!r}")
        seconds = max(0.3, min(8.0, len(body["input"]) * 0.04))
        samples = tone(seconds, RATE, 440.0)
        data = encode_audio(samples, RATE, "f32" if fmt == "pcm" else fmt)
        call.reply_bytes = data
        call.info["seconds"] = seconds
        if not body.get("stream"):
            return Reply.json({"audio_data": base64.b64encode(data).decode()})
        events = []
        for part in split_chunks(data, 5):
            payload = {"type": "speech.audio.delta", "audio_data": base64.b64encode(part).decode()}
            events.append(f"event: speech.audio.delta\ndata: {json.dumps(payload)}\n\n".encode())
        done = {"type": "speech.audio.done", "usage": {"prompt_tokens": len(body["input"]), "completion_tokens": 0,
                                                       "total_tokens": len(body["input"])}}
        events.append(f"event: speech.audio.done\ndata: {json.dumps(done)}\n\n".encode())
        return Reply(200, headers={"Content-Type": "text/event-stream"}, chunks=events)
