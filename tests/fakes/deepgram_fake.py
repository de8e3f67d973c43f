"""A fake Deepgram on 127.0.0.1 (on the shared runner, runner.py).

POST /v1/listen?model=nova-3&smart_format=true&punctuate=true&utterances=true&diarize=...&language=...
    (or detect_language=true)&keyterm=...: the raw audio bytes as the body with their Content-Type
    (headerless PCM: encoding=linear16&sample_rate=..). Answer {metadata: {request_id, sha256, duration,
    channels, models, model_info}, results: {channels: [{alternatives: [{transcript, confidence, words:
    [{word, start, end, confidence, punctuated_word, speaker}]}], detected_language}], utterances}}.
POST /v1/speak?model=aura-2-<voice>-<lang>&encoding=..&container=..&sample_rate=..&bit_rate=..
    JSON {"text"} (at most 2,000 characters); the audio streamed back. Sample rate is fixed for mp3, opus
    and aac (asking for one is an error), containers depend on the encoding.
Auth: `Authorization: Token <key>`. Errors: {"err_code", "err_msg", "request_id"}."""
from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import numpy as np

from .google_fake import RawFaults, hear_audio, hear_tone_speakers, measure, s16
from .runner import Call, FakeServer, Reply, encode_audio, split_chunks, tone

BOOL_PARAMS = {"smart_format", "punctuate", "utterances", "diarize", "detect_language", "numerals",
               "profanity_filter", "filler_words", "dictation", "measurements", "paragraphs", "detect_entities",
               "mip_opt_out", "multichannel"}
LISTEN_PARAMS = BOOL_PARAMS | {"model", "language", "keyterm", "keywords", "encoding", "sample_rate", "channels",
                               "redact", "utt_split", "tag", "replace", "search", "version", "callback"}
LISTEN_MODELS = {"nova-3", "nova-2", "nova", "enhanced", "base", "whisper"}
AURA2_VOICES = {"en": {"thalia", "andromeda", "helena", "apollo", "arcas", "aries", "asteria", "luna", "orion",
                       "zeus", "athena", "hera", "orpheus", "iris", "juno"},
                "es": {"celeste", "estrella", "nestor", "sirio", "carina", "alvaro", "diana"}}
SPEAK_PARAMS = {"model", "encoding", "container", "sample_rate", "bit_rate", "callback", "callback_method",
                "mip_opt_out", "tag"}
CONTAINERS = {"linear16": {"wav", "none"}, "mulaw": {"wav", "none"}, "alaw": {"wav", "none"},
              "opus": {"ogg", "none"}, "mp3": {"none"}, "flac": {"none"}, "aac": {"none"}}
# Sample rates Deepgram's TTS "Audio Format Combinations" table allows per encoding (checked 2026-12-07,
# https://developers.deepgram.com/docs/tts-media-output-settings); mp3, opus and aac take none.
RATES = {"linear16": {8000, 16000, 24000, 32000, 48000}, "mulaw": {8000, 16000}, "alaw": {8000, 16000},
         "flac": {8000, 16000, 22050, 32000, 48000}}
SECONDS_PER_CHAR = 0.05
MAX_CHARS = 2000


class DeepgramFake(RawFaults, FakeServer):
    prefix = "/v1"

    def __init__(self, api_key: str = "dg-test-key", *, tone_speakers: bool = False):
        super().__init__(api_key)
        # tone_speakers: audio is tone-burst words in two pitches and diarization tells the pitches apart,
        # numbering speakers per request (google_fake.hear_tone_speakers), as Deepgram does
        self.tone_speakers = tone_speakers

    def error(self, status: int, message: str, code: str | None = None, **kw: Any) -> Reply:
        code = code or {400: "Bad Request", 401: "INVALID_AUTH", 402: "ASR_PAYMENT_REQUIRED", 403: "FORBIDDEN",
                        404: "NOT_FOUND", 429: "TOO_MANY_REQUESTS"}.get(status, "INTERNAL_SERVER_ERROR")
        return Reply.json({"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}, status)

    def malformed_reply(self, call: Call) -> Reply:
        if call.path == "/v1/speak":  # a 200 that is not audio
            return Reply(200, b'{"message": "queued"}', {"Content-Type": "application/json"})
        return Reply(200, b'{"metadata": {}, "results": {"channels": []}}', {"Content-Type": "application/json"})

    def handle(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Token {self.api_key}":
            return self.error(401, "Invalid credentials.")
        if call.method != "POST":
            return self.reject(405, f"method {call.method} not allowed")
        if call.path == "/v1/listen":
            return self.listen(call)
        if call.path == "/v1/speak":
            return self.speak(call)
        return self.reject(404, f"no route {call.path}")

    def check_query(self, call: Call, allowed: set[str]) -> Reply | None:
        for k, v in call.query:
            if k not in allowed:
                return self.reject(400, f"Unknown query parameter: {k}", "INVALID_QUERY_PARAMETER")
            if k in BOOL_PARAMS and v not in ("true", "false"):
                return self.reject(400, f"Invalid value for {k}: {v!r} (expected true or false)",
                                   "INVALID_QUERY_PARAMETER")
        return None

    # ---- /v1/listen -----------------------------------------------------------------------------------
    def listen(self, call: Call) -> Reply:
        if (bad := self.check_query(call, LISTEN_PARAMS)) is not None:
            return bad
        model = call.q1("model") or "base"
        if model not in LISTEN_MODELS:
            return self.reject(400, "No such model/language/tier combination found.", "INVALID_QUERY_PARAMETER")
        if any(k == "keyterm" for k, _ in call.query) and model != "nova-3":
            return self.reject(400, "Keyterm Prompting is only available for Nova-3 models.",
                               "INVALID_QUERY_PARAMETER")
        if call.q1("language") and call.q1("detect_language") == "true":
            return self.reject(400, "language and detect_language cannot be combined.", "INVALID_QUERY_PARAMETER")
        ctype = call.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return self.reject(400, "Bad Request: a JSON body must contain a url to transcribe.")
        if not (ctype.startswith(("audio/", "video/")) or ctype == "application/octet-stream"):
            return self.reject(415, f"Unsupported Content-Type: {ctype}", "UNSUPPORTED_MEDIA_TYPE")
        if not call.body:
            return self.reject(400, "Bad Request: the request body is empty.")
        raw = None
        if call.q1("encoding"):
            if call.q1("encoding") != "linear16" or not (call.q1("sample_rate") or "").isdigit():
                return self.reject(400, "Raw audio needs encoding=linear16 and a sample_rate.")
            raw = (int(call.q1("sample_rate") or 0), int(call.q1("channels") or 1))
        try:
            info = measure(call, call.body, raw)
        except ValueError:
            return self.reject(400, "Bad Request: failed to process audio: corrupt or unsupported data")
        diarize = call.q1("diarize") == "true"
        punct = call.q1("punctuate") == "true" or call.q1("smart_format") == "true"
        if self.tone_speakers:
            if raw is None or raw[1] != 1:
                return self.reject(400, "this fake hears tone speakers in mono linear16 only")
            heard, lang = hear_tone_speakers(np.frombuffer(call.body, "<i2") / 32768.0, raw[0]), "en"
            voice_of: dict[int, str] = {}
            for h in heard:
                voice_of.setdefault(h.speaker, h.word)
            call.info["speakers"] = [voice_of[k] for k in sorted(voice_of)]  # the voice of speaker 0, 1
        else:
            heard, lang = hear_audio(info, call.index, diarize)

        def word(h) -> dict[str, Any]:
            w: dict[str, Any] = {"word": h.word, "start": h.start, "end": h.end, "confidence": 0.97}
            if punct:
                w["punctuated_word"] = h.punctuated
            if diarize:
                w.update(speaker=h.speaker, speaker_confidence=0.8)
            return w

        words = [word(h) for h in heard]
        transcript = " ".join(w.get("punctuated_word", w["word"]) for w in words)
        channel: dict[str, Any] = {"alternatives": [{"transcript": transcript, "confidence": 0.97, "words": words}]}
        if call.q1("detect_language") == "true":
            channel.update(detected_language=lang, language_confidence=0.99)
        results: dict[str, Any] = {"channels": [channel]}
        if call.q1("utterances") == "true":
            utts: list[list[dict[str, Any]]] = []
            cur: list[dict[str, Any]] = []
            for w in words:  # an utterance per pause (every 8 words here) or change of speaker
                if cur and (len(cur) == 8 or w.get("speaker") != cur[-1].get("speaker")):
                    utts.append(cur)
                    cur = []
                cur.append(w)
            if cur:
                utts.append(cur)
            results["utterances"] = [
                {"start": u[0]["start"], "end": u[-1]["end"], "confidence": 0.97, "channel": 0,
                 "transcript": " ".join(w.get("punctuated_word", w["word"]) for w in u), "words": u,
                 **({"speaker": u[0]["speaker"]} if diarize else {}), "id": str(uuid.uuid4())} for u in utts]
        model_id = str(uuid.uuid4())
        return Reply.json({
            "metadata": {"transaction_key": "deprecated", "request_id": str(uuid.uuid4()),
                         "sha256": hashlib.sha256(call.body).hexdigest(),
                         "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                         "duration": round(info["duration"], 5), "channels": 1, "models": [model_id],
                         "model_info": {model_id: {"name": f"general-{model}", "version": "2025-01-01.0",
                                                   "arch": model}}},
            "results": results})

    # ---- /v1/speak -------------------------------------------------------------------------------------
    def speak(self, call: Call) -> Reply:
        if (bad := self.check_query(call, SPEAK_PARAMS)) is not None:
            return bad
        parts = (call.q1("model") or "").split("-")
        if len(parts) != 4 or parts[:2] != ["aura", "2"] or parts[2] not in AURA2_VOICES.get(parts[3], set()):
            return self.reject(400, "No such model/version/tier combination found.", "INVALID_QUERY_PARAMETER")
        enc = call.q1("encoding") or "mp3"
        container, rate_q, bit_rate = call.q1("container"), call.q1("sample_rate"), call.q1("bit_rate")
        if enc not in CONTAINERS:
            return self.reject(400, f"Unsupported encoding: {enc}", "UNSUPPORTED_AUDIO_FORMAT")
        if container is not None and container not in CONTAINERS[enc]:
            return self.reject(400, f"Container {container} is not supported with encoding {enc}.",
                               "UNSUPPORTED_AUDIO_FORMAT")
        if rate_q is not None and (enc not in RATES or not rate_q.isdigit() or int(rate_q) not in RATES[enc]):
            return self.reject(400, f"sample_rate {rate_q} is not supported with encoding {enc}.",
                               "UNSUPPORTED_AUDIO_FORMAT")
        if bit_rate is not None and (enc not in ("mp3", "opus", "aac")
                                     or (enc == "mp3" and bit_rate not in ("32000", "48000"))):
            return self.reject(400, f"bit_rate {bit_rate} is not supported with encoding {enc}.",
                               "UNSUPPORTED_AUDIO_FORMAT")
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(call.json, dict):
            return self.reject(400, "Bad Request: the body must be JSON.")
        if set(call.json) != {"text"} or not isinstance(call.json["text"], str) or not call.json["text"].strip():
            return self.reject(400, 'Bad Request: the body must be {"text": "..."} with non-empty text.')
        text = call.json["text"]
        if len(text) > MAX_CHARS:
            return self.reject(413, f"Text exceeds the {MAX_CHARS} character limit.", "TEXT_TOO_LONG")
        rate = int(rate_q) if rate_q else (22050 if enc in ("mp3", "aac") else 48000 if enc in ("opus", "flac")
                                           else 24000)
        samples = tone(max(0.3, SECONDS_PER_CHAR * len(text)), rate)
        if enc == "linear16":
            data = s16(samples) if container == "none" else encode_audio(samples, rate, "wav")
            media = "application/octet-stream" if container == "none" else "audio/wav"
        elif enc in ("mp3", "opus", "flac", "aac"):
            data = encode_audio(samples, rate, enc)
            media = {"mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "aac": "audio/aac"}[enc]
        else:
            return self.error(400, f"The fake does not produce {enc}.", "UNSUPPORTED_AUDIO_FORMAT")
        call.reply_bytes = data
        return Reply(200, headers={"Content-Type": media, "dg-model-name": call.q1("model") or "",
                                   "dg-char-count": str(len(text)), "dg-request-id": str(uuid.uuid4())},
                     chunks=split_chunks(data, 6))
