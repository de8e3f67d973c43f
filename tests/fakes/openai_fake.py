"""A fake OpenAI audio API (https://platform.openai.com/docs/api-reference/audio) on 127.0.0.1.

Checked against the openai Python SDK 3.52 types (audio.transcription_create_params, TranscriptionDiarized,
speech_create_params; multipart as the SDK encodes it: lists as `name[]`, objects as `name[key]`).

POST /v1/audio/transcriptions and /v1/audio/translations: multipart with `file` (a filename whose extension
is one of OpenAI's and matches the bytes), `model`, `language` (transcriptions only), `prompt`,
`response_format`, `temperature`, repeated `timestamp_granularities[]` (only with verbose_json),
`chunking_strategy` ("auto", or `chunking_strategy[type]=server_vad` with [prefix_padding_ms],
[silence_duration_ms], [threshold]), `include[]=logprobs` (gpt-4o(-mini)-transcribe with json only; answered
with `logprobs: [{token, logprob, bytes}]`), `known_speaker_names[]` / `known_speaker_references[]`
(gpt-4o-transcribe-diarize, up to 4, data: URLs); translations take none of the newer fields. Any other field
(e.g. `include` without brackets) is refused like OpenAI does ("Unrecognized request argument"). Answers json /
text / srt / vtt / verbose_json in OpenAI's shapes; gpt-4o(-mini)-transcribe only json/text, with token usage;
gpt-4o-transcribe-diarize json / text / diarized_json (segments with speaker A, B, ... or the known names),
no prompt, no timestamp_granularities, and chunking_strategy required over 30 s.
POST /v1/audio/speech: JSON {model, input, voice (a built-in name, or {"id": "voice_..."} for a custom voice
on gpt-4o-mini-tts*), response_format, speed, instructions, stream_format}; answers the audio (a tone)
streamed in chunks, `pcm` = s16le 24 kHz mono.
Auth: `Authorization: Bearer <key>`; errors: {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

import math
import re
from typing import Any

from .runner import Call, FakeServer, Heard, Reply, encode_audio, hear, probe, split_chunks, tone

EXTENSIONS = {"flac": {"flac"}, "m4a": {"mov"}, "mp3": {"mp3"}, "mp4": {"mov"}, "mpeg": {"mp3"},
              "mpga": {"mp3"}, "oga": {"ogg"}, "ogg": {"ogg"}, "wav": {"wav"}, "webm": {"matroska"}}
ALL_FORMATS = {"json", "text", "srt", "verbose_json", "vtt"}
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                  "wav": "audio/wav", "pcm": "audio/pcm"}
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
          "marin", "cedar"}
LANG = re.compile(r"^[a-z]{2,3}$")
DEFAULT_SCRIPT = ("and so my fellow americans ask not what your country can do for you ask what you can do "
                  "for your country")


def ts(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


class OpenAIFake(FakeServer):
    prefix = "/v1"
    stt_fields = {"file", "model", "language", "prompt", "response_format", "temperature",
                  "timestamp_granularities[]", "chunking_strategy", "chunking_strategy[type]",
                  "chunking_strategy[prefix_padding_ms]", "chunking_strategy[silence_duration_ms]",
                  "chunking_strategy[threshold]", "include[]", "known_speaker_names[]",
                  "known_speaker_references[]", "stream"}
    translation_fields = {"file", "model", "prompt", "response_format", "temperature"}
    stt_models: dict[str, set[str]] = {"whisper-1": ALL_FORMATS, "gpt-4o-transcribe": {"json", "text"},
                                       "gpt-4o-mini-transcribe": {"json", "text"},
                                       "gpt-4o-mini-transcribe-2025-12-15": {"json", "text"},
                                       "gpt-4o-transcribe-diarize": {"json", "text", "diarized_json"}}
    logprob_models = {"gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15"}
    diarize_models = {"gpt-4o-transcribe-diarize"}
    custom_voice_models = {"gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"}
    translation_models = {"whisper-1"}
    tts_models = {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"}
    max_bytes = 25 * 1024 * 1024
    speech_seconds_per_char = 0.04

    def __init__(self, api_key: str = "sk-test-openai", script: str = DEFAULT_SCRIPT):
        super().__init__(api_key)
        self.script = script

    # ---- envelope -----------------------------------------------------------------------------------
    def error(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
              code: str | None = None, **kw: Any) -> Reply:
        type = type or {401: "invalid_request_error", 429: "requests", 404: "invalid_request_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
        return Reply.json({"error": {"message": message, "type": type, "param": param, "code": code}}, status)

    def malformed_reply(self, call: Call) -> Reply:
        if call.path.endswith("/audio/speech"):
            return Reply(200, b'{"error": "upstream hiccup"}', {"Content-Type": "application/json"})
        return Reply(200, b'{"text": "half a', {"Content-Type": "application/json"})

    def auth(self, call: Call) -> Reply | None:
        got = call.headers.get("authorization", "")
        if got != f"Bearer {self.api_key}":
            # OpenAI echoes (part of) the key it was given: the gateway must not pass that on.
            given = got.removeprefix("Bearer ")
            return self.error(401, f"Incorrect API key provided: {given}. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        return None

    # ---- routing ------------------------------------------------------------------------------------
    def handle(self, call: Call) -> Reply:
        bad = self.auth(call)
        if bad is not None:
            return bad
        if call.method != "POST":
            return self.reject(405, f"method {call.method} not allowed")
        if call.path == self.prefix + "/audio/transcriptions":
            return self.transcribe(call, "transcribe")
        if call.path == self.prefix + "/audio/translations":
            return self.transcribe(call, "translate")
        if call.path == self.prefix + "/audio/speech":
            return self.speech(call)
        return self.reject(404, f"Invalid URL (POST {call.path})")

    # ---- transcription ------------------------------------------------------------------------------
    def check_transcription(self, call: Call, task: str) -> Reply | tuple[str, str, list[str], Any]:
        if not call.headers.get("content-type", "").startswith("multipart/form-data"):
            return self.reject(400, "expected multipart/form-data")
        allowed = self.translation_fields if task == "translate" else self.stt_fields
        for name in list(call.form) + list(call.files):
            if name not in allowed:
                return self.reject(400, f"Unrecognized request argument supplied: {name}", param=name)
        if "file" not in call.files:
            return self.reject(400, "you must provide a file", param="file")
        filename, _, data = call.files["file"]
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in EXTENSIONS:
            return self.reject(400, f"Invalid file format. Supported formats: {sorted(EXTENSIONS)}", param="file")
        if len(data) > self.max_bytes:
            return self.reject(413, f"Maximum content size limit ({self.max_bytes}) exceeded", param="file")
        try:
            info = probe(data)
        except ValueError as e:
            return self.reject(400, f"Audio file might be corrupted or unsupported: {e}", param="file")
        if info.container not in EXTENSIONS[ext]:
            return self.reject(400, f"file extension .{ext} does not match its {info.container} content", param="file")
        model = call.f1("model")
        if model not in self.stt_models or (task == "translate" and model not in self.translation_models):
            return self.reject(400, f"Invalid model {model!r} for {task}", param="model")
        fmt = call.f1("response_format") or "json"
        if fmt not in self.stt_models[model]:
            return self.reject(400, f"response_format '{fmt}' is not compatible with model '{model}'",
                               param="response_format")
        gran = call.form.get("timestamp_granularities[]", [])
        if gran and fmt != "verbose_json":
            return self.reject(400, "timestamp_granularities requires response_format=verbose_json",
                               param="timestamp_granularities")
        if any(g not in ("word", "segment") for g in gran):
            return self.reject(400, f"invalid timestamp_granularities {gran}", param="timestamp_granularities")
        if call.f1("temperature") is not None:
            try:
                t = float(call.f1("temperature") or "")
                assert 0 <= t <= 1
            except (ValueError, AssertionError):
                return self.reject(400, "temperature must be a number between 0 and 1", param="temperature")
        lang = call.f1("language")
        if lang is not None and not LANG.match(lang):
            return self.reject(400, f"Invalid language {lang!r}: use ISO-639-1", param="language")
        for single in ("model", "response_format", "language", "prompt", "temperature", "chunking_strategy"):
            if len(call.form.get(single, [])) > 1:
                return self.reject(400, f"{single} given more than once", param=single)
        bad = self.check_newer_fields(call, model, fmt, gran, info.duration)
        if bad is not None:
            return bad
        call.info["probe"] = info
        return model, fmt, gran, info

    def check_newer_fields(self, call: Call, model: str, fmt: str, gran: list[str], duration: float) -> Reply | None:
        include = call.form.get("include[]", [])
        if any(x != "logprobs" for x in include):
            return self.reject(400, f"Invalid include {include}", param="include")
        if include and (model not in self.logprob_models or fmt != "json"):
            return self.reject(400, "logprobs are only supported with response_format json on gpt-4o-transcribe "
                                    "and gpt-4o-mini-transcribe", param="include")
        cs_keys = [k for k in call.form if k.startswith("chunking_strategy")]
        if "chunking_strategy" in call.form and len(cs_keys) > 1:
            return self.reject(400, "chunking_strategy given both as a value and as an object", param="chunking_strategy")
        if "chunking_strategy" in call.form and call.f1("chunking_strategy") != "auto":
            return self.reject(400, "chunking_strategy must be 'auto' or a server_vad object", param="chunking_strategy")
        if cs_keys and "chunking_strategy" not in call.form:
            if call.f1("chunking_strategy[type]") != "server_vad":
                return self.reject(400, "chunking_strategy.type must be 'server_vad'", param="chunking_strategy.type")
            try:
                for k in ("prefix_padding_ms", "silence_duration_ms"):
                    v = call.f1(f"chunking_strategy[{k}]")
                    if v is not None:
                        int(v)
                v = call.f1("chunking_strategy[threshold]")
                if v is not None and not 0.0 <= float(v) <= 1.0:
                    raise ValueError(v)
            except ValueError:
                return self.reject(400, "invalid server_vad settings", param="chunking_strategy")
        names = call.form.get("known_speaker_names[]", [])
        refs = call.form.get("known_speaker_references[]", [])
        if (names or refs) and model not in self.diarize_models:
            return self.reject(400, "known_speaker_names are only supported by gpt-4o-transcribe-diarize",
                               param="known_speaker_names")
        if len(names) != len(refs) or len(names) > 4 or not all(r.startswith("data:audio/") for r in refs):
            return self.reject(400, "known_speaker_names and known_speaker_references must pair up (at most 4, "
                                    "data URLs)", param="known_speaker_references")
        if model in self.diarize_models:
            if call.f1("prompt") is not None:
                return self.reject(400, "prompt is not supported with gpt-4o-transcribe-diarize", param="prompt")
            if gran:
                return self.reject(400, "timestamp_granularities is not supported with gpt-4o-transcribe-diarize",
                                   param="timestamp_granularities")
            if duration > 30 and not cs_keys:
                return self.reject(400, "chunking_strategy is required for audio longer than 30 seconds",
                                   param="chunking_strategy")
        return None

    def transcript_body(self, call: Call, task: str, model: str, fmt: str, gran: list[str], heard: Heard,
                        duration: float) -> Any:
        if fmt == "verbose_json":
            body: dict[str, Any] = {
                "task": task, "language": "english", "duration": round(duration, 2), "text": heard.text,
                "segments": [{"id": i, "seek": 0, "start": s, "end": e, "text": t, "tokens": [50364 + i, 400],
                              "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.3,
                              "no_speech_prob": 0.01} for i, (t, s, e) in enumerate(heard.segments)],
                "usage": {"type": "duration", "seconds": math.ceil(duration)}}
            if "word" in gran:
                body["words"] = [{"word": w, "start": s, "end": e} for w, s, e in heard.words]
            if "segment" not in gran and gran:
                body.pop("segments")
            return body
        if model.startswith("gpt-4o"):
            tin, tout = int(duration * 12), len(heard.words) * 2
            usage = {"type": "tokens", "input_tokens": tin, "input_token_details": {"text_tokens": 0, "audio_tokens": tin},
                     "output_tokens": tout, "total_tokens": tin + tout}
            if fmt == "diarized_json":
                names = call.form.get("known_speaker_names[]", []) or ["A", "B"]
                half = len(heard.segments) // 2 or 1
                segs = [{"type": "transcript.text.segment", "id": f"seg_{i:03d}", "start": st, "end": en, "text": t,
                         "speaker": names[min(int(i >= half), len(names) - 1)]}
                        for i, (t, st, en) in enumerate(heard.segments)]
                return {"task": "transcribe", "duration": round(duration, 2), "text": heard.text, "segments": segs,
                        "usage": usage}
            body = {"text": heard.text, "usage": usage}
            if call.form.get("include[]"):
                body["logprobs"] = [{"token": w, "logprob": -0.01 * (i + 1), "bytes": list(w.encode())}
                                    for i, (w, _, _) in enumerate(heard.words)]
            return body
        return {"text": heard.text, "usage": {"type": "duration", "seconds": math.ceil(duration)}}

    def transcribe(self, call: Call, task: str) -> Reply:
        checked = self.check_transcription(call, task)
        if isinstance(checked, Reply):
            return checked
        model, fmt, gran, info = checked
        heard = hear(self.script, info.duration)
        call.info["heard"] = heard
        if fmt == "text":
            return Reply.text(heard.text + "\n")
        if fmt in ("srt", "vtt"):
            sep = "," if fmt == "srt" else "."
            blocks = [f"{i + 1}\n{ts(s, sep)} --> {ts(e, sep)}\n{t.strip()}\n" if fmt == "srt"
                      else f"{ts(s, sep)} --> {ts(e, sep)}\n{t.strip()}\n" for i, (t, s, e) in enumerate(heard.segments)]
            head = "WEBVTT\n\n" if fmt == "vtt" else ""
            return Reply.text(head + "\n".join(blocks))
        body = self.transcript_body(call, task, model, fmt, gran, heard, info.duration)
        call.reply_json = body
        return Reply.json(body)

    # ---- speech -------------------------------------------------------------------------------------
    speech_keys = {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}

    def speech(self, call: Call) -> Reply:
        body = call.json
        if not isinstance(body, dict):
            return self.reject(400, "expected a JSON body")
        for k in body:
            if k not in self.speech_keys:
                return self.reject(400, f"Unrecognized request argument supplied: {k}", param=k)
        model, text, voice = body.get("model"), body.get("input"), body.get("voice")
        if model not in self.tts_models:
            return self.reject(400, f"Invalid model {model!r}", param="model")
        if not isinstance(text, str) or not text or len(text) > 4096:
            return self.reject(400, "input must be a string of 1 to 4096 characters", param="input")
        if isinstance(voice, dict):
            if set(voice) != {"id"} or not str(voice.get("id", "")).startswith("voice_"):
                return self.reject(400, f"Invalid voice object {voice!r}", param="voice")
            if model not in self.custom_voice_models:
                return self.reject(400, f"custom voices are not supported by {model}", param="voice")
        elif voice not in VOICES:
            return self.reject(400, f"Invalid voice {voice!r}", param="voice")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            return self.reject(400, f"Invalid response_format {fmt!r}", param="response_format")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            return self.reject(400, "speed must be between 0.25 and 4.0", param="speed")
        if "instructions" in body and not model.startswith("gpt-4o"):
            return self.reject(400, f"instructions are not supported by {model}", param="instructions")
        seconds = max(0.3, min(10.0, len(text) * self.speech_seconds_per_char / speed))
        data = encode_audio(tone(seconds, 24000), 24000, fmt)
        call.reply_bytes = data
        call.info["seconds"] = seconds
        return Reply(200, headers={"Content-Type": SPEECH_FORMATS[fmt]}, chunks=split_chunks(data, 4))


class GroqFake(OpenAIFake):
    """Groq's OpenAI-compatible audio API (https://console.groq.com/docs/speech-to-text): /openai/v1, Whisper
    large-v3 (transcription + translation) and large-v3-turbo (transcription only); response_format json,
    text or verbose_json only; verbose_json and json carry an `x_groq` id. No speech here."""

    prefix = "/openai/v1"
    stt_fields = {"file", "url", "model", "language", "prompt", "response_format", "temperature",
                  "timestamp_granularities[]"}
    translation_fields = {"file", "url", "model", "prompt", "response_format", "temperature"}
    stt_models = {"whisper-large-v3": {"json", "text", "verbose_json"},
                  "whisper-large-v3-turbo": {"json", "text", "verbose_json"}}
    translation_models = {"whisper-large-v3"}
    tts_models: set[str] = set()

    def __init__(self, api_key: str = "gsk_test_groq", script: str = DEFAULT_SCRIPT):
        super().__init__(api_key, script)

    def error(self, status: int, message: str, *, type: str | None = None, code: str | None = None,
              **kw: Any) -> Reply:
        return Reply.json({"error": {"message": message, "type": type or "invalid_request_error",
                                     **({"code": code} if code else {})}}, status)

    def transcript_body(self, call: Call, task: str, model: str, fmt: str, gran: list[str], heard: Heard,
                        duration: float) -> Any:
        body = super().transcript_body(call, task, model, fmt, gran, heard, duration)
        body.pop("usage", None)
        body["x_groq"] = {"id": f"req_fake{call.index:04d}"}
        return body

    def speech(self, call: Call) -> Reply:
        return self.reject(404, "The model does not exist or you do not have access to it.")
