"""A fake OpenRouter audio API (https://openrouter.ai/docs/api-reference) on 127.0.0.1, checking requests
against the openrouter Python SDK 1.3.84 types (components.STTRequest, STTRequestProvider, SpeechRequest,
SpeechTurn; read 2026-12-07) and the STT guide.

POST /api/v1/audio/transcriptions: JSON {model, input_audio: {data (raw base64, no data: URI), format} | {url,
format?}, language, temperature, response_format (json | verbose_json), timestamp_granularities, provider:
{data_collection, zdr, options}, diarize, keyterms, session_id, user, trace}; the declared format must match
the bytes. verbose_json is only served for OpenAI-compatible models (here: openai/*), and diarize needs
verbose_json (a json request with diarize is a 400); `provider` takes no routing keys (order, only, sort...).
Answer {text, usage: {seconds, cost}} (+ task, language, duration, segments, words with verbose_json; with
diarize the words carry speaker (int) and speaker_label). Multipart is refused here.
POST /api/v1/audio/speech: JSON {model, input (a string or [{text, voice?, instructions?}] turns), voice
(a string), response_format (mp3 | pcm), speed, instructions, provider, input_references, session_id, user,
trace}; answers raw audio bytes (pcm: s16le 24 kHz mono).
Auth: Bearer. Errors: {"error": {"code", "message", "metadata"}}.

GET /api/v1/providers is not served here (the gateway's own route is tested through the SDK)."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from .openai_fake import DEFAULT_SCRIPT
from .runner import Call, FakeServer, Reply, encode_audio, hear, probe, split_chunks, tone

STT_KEYS = {"model", "input_audio", "language", "temperature", "response_format", "timestamp_granularities",
            "provider", "diarize", "keyterms", "session_id", "user", "trace"}
TTS_KEYS = {"model", "input", "voice", "response_format", "speed", "instructions", "provider", "session_id",
            "user", "trace", "input_references"}
PROVIDER_KEYS = {"data_collection", "zdr", "options"}
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

    def check_provider(self, body: dict[str, Any]) -> Reply | None:
        prov = body.get("provider")
        if prov is None:
            return None
        if not isinstance(prov, dict):
            return self.reject(400, "provider: expected an object")
        unknown = [k for k in prov if k not in PROVIDER_KEYS]
        if unknown:
            return self.reject(400, f"provider: Unrecognized key(s) in object: {unknown}")
        return None

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
        bad = self.check_provider(body)
        if bad is not None:
            return bad
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
        if rf == "verbose_json" and not model.startswith("openai/"):
            return self.reject(400, f"response_format verbose_json is not supported by {model}")
        diarize = body.get("diarize")
        if diarize is not None and not isinstance(diarize, bool):
            return self.reject(400, "diarize: expected a boolean")
        if diarize and rf != "verbose_json":
            return self.reject(400, "diarize requires response_format verbose_json")
        kt = body.get("keyterms")
        if kt is not None and (not isinstance(kt, list) or not all(isinstance(t, str) for t in kt)):
            return self.reject(400, "keyterms: expected an array of strings")
        gran = body.get("timestamp_granularities") or []
        heard = hear(self.script, info.duration)
        call.info.update(probe=info, heard=heard, bytes=raw)
        usage = {"seconds": round(info.duration, 2), "cost": round(PER_SECOND * info.duration, 8)}
        out: dict[str, Any] = {"text": heard.text, "usage": usage}
        if rf == "verbose_json":
            out.update(task="transcribe", language="en", duration=round(info.duration, 2),
                       segments=[{"id": i, "start": s, "end": e, "text": t} for i, (t, s, e) in enumerate(heard.segments)])
            if "word" in gran or diarize:
                half = len(heard.words) // 2
                out["words"] = [{"word": w, "start": s, "end": e,
                                 **({"speaker": int(i >= half), "speaker_label": f"Speaker {int(i >= half)}"}
                                    if diarize else {})} for i, (w, s, e) in enumerate(heard.words)]
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
        bad = self.check_provider(body)
        if bad is not None:
            return bad
        text = body.get("input")
        if isinstance(text, list):  # SpeechTurn[]: {text, voice?, instructions?}
            if not text or not all(isinstance(t, dict) and isinstance(t.get("text"), str)
                                   and set(t) <= {"text", "voice", "instructions"} for t in text):
                return self.reject(400, "input: expected a string or a list of {text, voice?, instructions?}")
            text = " ".join(t["text"] for t in text)
        if not isinstance(text, str) or not text:
            return self.reject(400, "input: required")
        if "voice" in body and not isinstance(body["voice"], str):
            return self.reject(400, "voice: expected a string")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("mp3", "pcm"):
            return self.reject(400, f"response_format: invalid enum value {fmt!r}; expected 'mp3' | 'pcm'")
        seconds = max(0.3, min(8.0, len(text) * 0.04))
        data = encode_audio(tone(seconds, 24000, 262.0), 24000, fmt)
        call.reply_bytes = data
        call.info["seconds"] = seconds
        ctype = "audio/mpeg" if fmt == "mp3" else "audio/pcm"
        return Reply(200, headers={"Content-Type": ctype}, chunks=split_chunks(data, 3))
