"""A fake OpenRouter audio API (https://openrouter.ai/docs/api-reference) on 127.0.0.1.

POST /api/v1/audio/transcriptions: JSON {model, input_audio: {data (raw base64, no data: URI), format},
language, temperature, response_format (json | verbose_json), timestamp_granularities, provider, diarize,
keyterms, session_id, user}; the declared format must match the bytes. Answer {text, usage: {seconds, cost}}
(+ task, language, duration, segments, words with verbose_json). Multipart is refused: this endpoint is not
OpenAI-compatible.
POST /api/v1/audio/speech: JSON {model, input, voice, response_format (mp3 | pcm), speed, instructions,
provider, session_id, user}; answers raw audio bytes (pcm: s16le 24 kHz mono).
Auth: Bearer. Errors: {"error": {"code", "message", "metadata"}}."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from .openai_fake import DEFAULT_SCRIPT
from .runner import Call, FakeServer, Reply, encode_audio, hear, probe, split_chunks, tone

STT_KEYS = {"model", "input_audio", "language", "temperature", "response_format", "timestamp_granularities",
            "provider", "diarize", "keyterms", "session_id", "user", "trace"}
TTS_KEYS = {"model", "input", "voice", "response_format", "speed", "instructions", "provider", "session_id",
            "user", "trace"}
FORMAT_CONTAINERS = {"wav": {"wav"}, "mp3": {"mp3"}, "flac": {"flac"}, "m4a": {"mov"}, "ogg": {"ogg"},
                     "webm": {"matroska"}, "aac": {"aac"}}
PER_SECOND = 0.0001


class OpenRouterFake(FakeServer):
    prefix = "/api/v1"

    def __init__(self, api_key: str = "sk-or-v1-test", script: str = DEFAULT_SCRIPT,
                 models: set[str] | None = None):
        super().__init__(api_key)
        self.script = script
        self.models = models

    def error(self, status: int, message: str, **kw: Any) -> Reply:
        return Reply.json({"error": {"code": status, "message": message, "metadata": kw.get("metadata") or {}}},
                          status)

    def handle(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "No auth credentials found")
        if call.path == "/api/v1/audio/transcriptions":
            return self.transcribe(call)
        if call.path == "/api/v1/audio/speech":
            return self.speech(call)
        return self.reject(404, f"Not Found: {call.path}")

    def transcribe(self, call: Call) -> Reply:
        body = call.json
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(body, dict):
            return self.reject(400, "this endpoint takes a JSON body with input_audio, not multipart")
        unknown = [k for k in body if k not in STT_KEYS]
        if unknown:
            return self.reject(400, f"Unrecognized key(s) in object: {unknown}")
        model = body.get("model")
        if not isinstance(model, str) or "/" not in model or (self.models and model not in self.models):
            return self.reject(400, f"{model} is not a valid model ID")
        ia = body.get("input_audio")
        if not isinstance(ia, dict) or set(ia) - {"data", "format"}:
            return self.reject(400, "input_audio must be {data, format}")
        fmt = ia.get("format")
        if fmt not in FORMAT_CONTAINERS:
            return self.reject(400, f"input_audio.format: unsupported format {fmt!r}")
        data = ia.get("data")
        if not isinstance(data, str) or data.startswith("data:"):
            return self.reject(400, "Invalid base64: send the raw base64 payload, not a data URI")
        try:
            raw = base64.b64decode(data, validate=True)
            info = probe(raw)
        except (binascii.Error, ValueError) as e:
            return self.reject(400, f"input_audio.data: {e}")
        if info.container not in FORMAT_CONTAINERS[fmt]:
            return self.reject(400, f"input_audio.format {fmt} does not match the audio ({info.container})")
        rf = body.get("response_format", "json")
        if rf not in ("json", "verbose_json"):
            return self.reject(400, f"response_format: invalid enum value {rf!r}")
        gran = body.get("timestamp_granularities") or []
        heard = hear(self.script, info.duration)
        call.info.update(probe=info, heard=heard, bytes=raw)
        usage = {"seconds": round(info.duration, 2), "cost": round(PER_SECOND * info.duration, 8)}
        out: dict[str, Any] = {"text": heard.text, "usage": usage}
        if rf == "verbose_json":
            out.update(task="transcribe", language="en", duration=round(info.duration, 2),
                       segments=[{"id": i, "start": s, "end": e, "text": t} for i, (t, s, e) in enumerate(heard.segments)])
            if "word" in gran:
                out["words"] = [{"word": w, "start": s, "end": e} for w, s, e in heard.words]
        call.reply_json = out
        return Reply.json(out)

    def speech(self, call: Call) -> Reply:
        body = call.json
        if not isinstance(body, dict):
            return self.reject(400, "expected a JSON body")
        unknown = [k for k in body if k not in TTS_KEYS]
        if unknown:
            return self.reject(400, f"Unrecognized key(s) in object: {unknown}")
        if not isinstance(body.get("model"), str) or "/" not in body["model"]:
            return self.reject(400, f"{body.get('model')} is not a valid model ID")
        if not isinstance(body.get("input"), str) or not body["input"]:
            return self.reject(400, "input: required")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("mp3", "pcm"):
            return self.reject(400, f"response_format: invalid enum value {fmt!r}; expected 'mp3' | 'pcm'")
        seconds = max(0.3, min(8.0, len(body["input"]) * 0.04))
        data = encode_audio(tone(seconds, 24000, 262.0), 24000, fmt)
        call.reply_bytes = data
        call.info["seconds"] = seconds
        ctype = "audio/mpeg" if fmt == "mp3" else "audio/pcm"
        return Reply(200, headers={"Content-Type": ctype}, chunks=split_chunks(data, 3))
