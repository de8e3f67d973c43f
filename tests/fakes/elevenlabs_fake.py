"""A fake ElevenLabs on 127.0.0.1 (on the shared runner, runner.py).

POST /v1/speech-to-text: multipart with model_id (scribe_v1 | scribe_v1_experimental | scribe_v2), file,
    language_code, tag_audio_events, num_speakers, timestamps_granularity, diarize, diarization_threshold,
    file_format (pcm_s16le_16 | other), temperature, seed, keyterms (scribe_v2: one field holding a JSON
    array of strings, as issue 16 read the current elevenlabs-python SDK; the stored SDK copies we could read
    (raw_client.py, scribe_v1 era) passed a list in `data`). Answer {language_code
    (ISO 639-3), language_probability, text, words: [{text, start, end, type: word | spacing | audio_event,
    speaker_id, logprob}], transcription_id, audio_duration_secs}.
POST /v1/text-to-speech/{voice_id}/stream?output_format=mp3_44100_128 | pcm_24000 | ...: JSON {text,
    model_id, voice_settings: {stability, similarity_boost, style, use_speaker_boost, speed (0.7-1.2)},
    language_code, seed, ...}; the audio streamed back.
POST /v1/text-to-speech/{voice_id}/with-timestamps and .../stream/with-timestamps (same query and body):
    AudioWithTimestampsResponse {audio_base64, alignment, normalized_alignment}, each alignment
    {characters, character_start_times_seconds, character_end_times_seconds} (one entry per character of the
    text, spaces included); the streaming variant sends newline-delimited JSON objects of that shape
    (StreamingAudioChunkWithTimestampsResponse), each with its slice of the audio and of the characters, times
    counted from the start of the whole audio. Read from elevenlabs-python's Fern-generated
    text_to_speech/raw_client.py (convert_with_timestamps, stream_with_timestamps: iter_lines + json.loads; at
    commit 0ff0b6cb5c4c) and types/audio_with_timestamps_response.py, streaming_audio_chunk_with_timestamps_
    response.py, character_alignment_response_model.py (commit 1aabfa7580d9); the SDK's version at those
    commits was not stored with them, so none is claimed. Whether the real stream counts times per chunk is not
    stated there: the adapter takes either.
Auth: `xi-api-key`. Errors: {"detail": {"status", "message"}}; validation (422): {"detail": [{"type", "loc",
"msg"}]}, FastAPI's shape."""
from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

from .google_fake import RawFaults, hear_audio, measure, s16
from .runner import Call, FakeServer, Reply, encode_audio, split_chunks, tone

PREMADE_VOICES = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "pNInz6obpgDQGcFmaJgB": "Adam",
                  "EXAVITQu4vr4xnSDxMaL": "Bella", "ErXwobaYiN019PkySvjV": "Antoni"}
STT_MODELS = {"scribe_v1", "scribe_v1_experimental", "scribe_v2"}
TTS_MODELS = {"eleven_flash_v2_5", "eleven_flash_v2", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_v3"}
STT_FIELDS = {"model_id", "file", "language_code", "tag_audio_events", "num_speakers", "timestamps_granularity",
              "diarize", "diarization_threshold", "file_format", "cloud_storage_url", "temperature", "seed",
              "use_multi_channel", "keyterms", "webhook", "webhook_id", "additional_formats"}
TTS_FIELDS = {"text", "model_id", "language_code", "voice_settings", "pronunciation_dictionary_locators", "seed",
              "previous_text", "next_text", "previous_request_ids", "next_request_ids", "apply_text_normalization",
              "apply_language_text_normalization"}
VOICE_SETTINGS = {"stability", "similarity_boost", "style", "use_speaker_boost", "speed"}
OUTPUT_FORMATS = ({f"mp3_{r}" for r in ("22050_32", "44100_32", "44100_64", "44100_96", "44100_128", "44100_192")}
                  | {f"pcm_{r}" for r in (8000, 16000, 22050, 24000, 44100, 48000)} | {"ulaw_8000", "alaw_8000"}
                  | {f"opus_48000_{b}" for b in (32, 64, 96, 128, 192)})
ISO3 = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "ru": "rus", "ja": "jpn", "zh": "cmn"}
SECONDS_PER_CHAR = 0.05
TTS_PATH = "/v1/text-to-speech/"


class ElevenLabsFake(RawFaults, FakeServer):
    prefix = "/v1"

    def __init__(self, api_key: str = "xi-test-key"):
        super().__init__(api_key)

    def error(self, status: int, message: str, code: str | None = None, **kw: Any) -> Reply:
        code = code or {401: "invalid_api_key", 404: "not_found", 429: "too_many_concurrent_requests"}.get(
            status, "invalid_request" if status < 500 else "internal_error")
        return Reply.json({"detail": {"status": code, "message": message}}, status)

    def invalid(self, field: str, msg: str, kind: str = "value_error") -> Reply:
        self.violations.append(f"{field}: {msg}")
        return Reply.json({"detail": [{"type": kind, "loc": ["body", field], "msg": msg, "input": None}]}, 422)

    def malformed_reply(self, call: Call) -> Reply:
        if call.path.startswith(TTS_PATH):
            return Reply(200, b"<html>upstream connect error</html>", {"Content-Type": "text/html"})
        return Reply(200, b'{"language_code": "eng", "words": []}', {"Content-Type": "application/json"})

    def handle(self, call: Call) -> Reply:
        key = call.headers.get("xi-api-key")
        if key is None:
            return self.reject(401, "Missing xi-api-key header. Pass your API key.", "needs_authorization")
        if key != self.api_key:
            return self.error(401, "Invalid API key", "invalid_api_key")
        if call.method != "POST":
            return self.reject(405, f"method {call.method} not allowed")
        if call.path == "/v1/speech-to-text":
            return self.stt(call)
        if call.path.startswith(TTS_PATH):
            voice_id, _, kind = call.path[len(TTS_PATH):].partition("/")
            if kind in ("stream", "with-timestamps", "stream/with-timestamps"):
                return self.tts(call, voice_id, kind)
        return self.reject(404, f"no route {call.path}")

    # ---- speech-to-text ---------------------------------------------------------------------------------
    def stt(self, call: Call) -> Reply:
        if not call.headers.get("content-type", "").startswith("multipart/form-data"):
            return self.invalid("file", "Expected a multipart/form-data body")
        for k in list(call.form) + list(call.files):
            if k not in STT_FIELDS:
                return self.invalid(k, "Extra inputs are not permitted", "extra_forbidden")
        form = {k: v[0] for k, v in call.form.items() if k != "keyterms"}
        if form.get("model_id") not in STT_MODELS:
            return self.invalid("model_id", "Field required" if "model_id" not in form
                                else f"Input should be one of {', '.join(sorted(STT_MODELS))}")
        for k in ("tag_audio_events", "diarize", "use_multi_channel", "webhook"):
            if k in form and form[k] not in ("true", "false"):
                return self.invalid(k, "Input should be a valid boolean")
        if form.get("timestamps_granularity", "word") not in ("none", "word", "character"):
            return self.invalid("timestamps_granularity", "Input should be 'none', 'word' or 'character'")
        if form.get("file_format", "other") not in ("pcm_s16le_16", "other"):
            return self.invalid("file_format", "Input should be 'pcm_s16le_16' or 'other'")
        try:
            if "temperature" in form and not 0.0 <= float(form["temperature"]) <= 2.0:
                return self.invalid("temperature", "Input should be between 0 and 2")
            if "num_speakers" in form and not 1 <= int(form["num_speakers"]) <= 32:
                return self.invalid("num_speakers", "Input should be between 1 and 32")
        except ValueError:
            return self.invalid("temperature", "Input should be a valid number")
        if "keyterms" in call.form and form["model_id"] != "scribe_v2":
            return self.invalid("keyterms", "keyterms are only supported by scribe_v2")
        if "keyterms" in call.form:  # one field holding a JSON array of strings (<= 100 terms, < 50 chars each)
            try:
                terms = json.loads(call.form["keyterms"][0]) if len(call.form["keyterms"]) == 1 else None
            except ValueError:
                terms = None
            if not isinstance(terms, list) or not 0 < len(terms) <= 100 \
                    or not all(isinstance(t, str) and 0 < len(t) < 50 for t in terms):
                return self.invalid("keyterms", "Input should be one JSON array of at most 100 strings")
            call.info["keyterms"] = terms
        if "file" not in call.files:
            return self.reject(400, "Exactly one of file or cloud_storage_url must be provided.", "invalid_parameters")
        _, _, data = call.files["file"]
        try:
            info = measure(call, data, (16000, 1) if form.get("file_format") == "pcm_s16le_16" else None)
        except ValueError:
            return self.reject(400, "The uploaded file could not be decoded as audio.", "invalid_content")
        diarize = form.get("diarize") == "true"
        heard, lang = hear_audio(info, call.index, diarize)
        if form.get("language_code"):
            lang = form["language_code"][:2]
        tokens: list[dict[str, Any]] = []
        if form.get("tag_audio_events", "true") == "true":
            tokens.append({"text": "(soft music)", "start": 0.0, "end": heard[0].start, "type": "audio_event"})
            tokens.append({"text": " ", "start": heard[0].start, "end": heard[0].start, "type": "spacing"})
        for i, h in enumerate(heard):
            if i:
                tokens.append({"text": " ", "start": heard[i - 1].end, "end": h.start, "type": "spacing"})
            tokens.append({"text": h.punctuated, "start": h.start, "end": h.end, "type": "word", "logprob": -0.05})
        if diarize:  # each token belongs to the speaker of the nearest word up to it
            speakers = iter(heard)
            spk = f"speaker_{heard[0].speaker}"
            for t in tokens:
                if t["type"] == "word":
                    spk = f"speaker_{next(speakers).speaker}"
                t["speaker_id"] = spk
        if form.get("timestamps_granularity", "word") == "none":
            for t in tokens:
                t.pop("start")
                t.pop("end")
        return Reply.json({"language_code": ISO3.get(lang, lang), "language_probability": 0.98,
                           "text": "".join(t["text"] for t in tokens), "words": tokens,
                           "transcription_id": uuid.uuid4().hex[:20],
                           "audio_duration_secs": round(info["duration"], 5)})

    # ---- text-to-speech -----------------------------------------------------------------------------------
    def tts(self, call: Call, voice_id: str, kind: str = "stream") -> Reply:
        if voice_id not in PREMADE_VOICES:
            return self.error(404, f"A voice with the voice_id {voice_id} was not found.", "voice_not_found")
        for k, _ in call.query:
            if k not in ("output_format", "enable_logging", "optimize_streaming_latency"):
                return self.invalid(k, "Extra inputs are not permitted", "extra_forbidden")
        fmt = call.q1("output_format") or "mp3_44100_128"
        if fmt not in OUTPUT_FORMATS:
            return self.reject(400, f"Invalid output format: {fmt}", "invalid_output_format")
        body = call.json
        if not isinstance(body, dict):
            return self.invalid("text", "Field required", "missing")
        for k in body:
            if k not in TTS_FIELDS:
                return self.invalid(k, "Extra inputs are not permitted", "extra_forbidden")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return self.invalid("text", "Field required", "missing")
        if body.get("model_id", "eleven_multilingual_v2") not in TTS_MODELS:
            return self.reject(400, f"A model with model ID {body.get('model_id')} does not exist", "model_not_found")
        vs = body.get("voice_settings") or {}
        for k in vs:
            if k not in VOICE_SETTINGS:
                return self.invalid(f"voice_settings.{k}", "Extra inputs are not permitted", "extra_forbidden")
        speed = vs.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.7 <= speed <= 1.2:
            return self.invalid("voice_settings.speed", "Input should be between 0.7 and 1.2")
        seconds = max(0.3, SECONDS_PER_CHAR * len(body["text"]) / speed)
        codec, rate = fmt.split("_")[0], int(fmt.split("_")[1])
        samples = tone(seconds, rate)
        if codec == "pcm":
            data, media = s16(samples), "audio/pcm"
        elif codec == "mp3":
            data, media = encode_audio(samples, rate, "mp3"), "audio/mpeg"
        else:
            return self.error(400, f"The fake does not produce {fmt}.", "invalid_output_format")
        call.reply_bytes = data
        call.info["endpoint"] = kind
        if kind != "stream":
            return self.timed(body["text"], seconds, data, kind == "stream/with-timestamps")
        return Reply(200, headers={"Content-Type": media, "request-id": uuid.uuid4().hex,
                                   "character-cost": str(math.ceil(len(body["text"])))},
                     chunks=split_chunks(data, 6))

    @staticmethod
    def timed(text: str, seconds: float, data: bytes, streamed: bool) -> Reply:
        """The with-timestamps answers: each character of `text` given an equal share of the audio."""
        per = seconds / len(text)

        def alignment(lo: int, hi: int) -> dict[str, Any]:
            return {"characters": list(text[lo:hi]),
                    "character_start_times_seconds": [round(i * per, 3) for i in range(lo, hi)],
                    "character_end_times_seconds": [round((i + 1) * per, 3) for i in range(lo, hi)]}

        def chunk(lo: int, hi: int, audio: bytes) -> dict[str, Any]:
            a = alignment(lo, hi)
            return {"audio_base64": base64.b64encode(audio).decode(), "alignment": a, "normalized_alignment": a}

        if not streamed:
            return Reply.json(chunk(0, len(text), data))
        parts = 3
        cuts = [round(len(text) * k / parts) for k in range(parts + 1)]
        sample_cuts = [len(data) * k // parts // 2 * 2 for k in range(parts + 1)]  # whole s16 samples
        lines = [json.dumps(chunk(cuts[k], cuts[k + 1], data[sample_cuts[k]:sample_cuts[k + 1]])).encode() + b"\n"
                 for k in range(parts)]
        return Reply(200, headers={"Content-Type": "application/json"}, chunks=lines)
