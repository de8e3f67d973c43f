"""A fake Google on 127.0.0.1 (on the shared runner, runner.py): Cloud Speech-to-Text v2 `recognize` and the
Gemini API `generateContent` for TTS, checking requests the way the real APIs do and answering in their
real shapes.

POST /v2/projects/{project}/locations/{location}/recognizers/{recognizer}:recognize
    JSON {config: {autoDecodingConfig | explicitDecodingConfig, model, languageCodes, features}, content}
    (content = base64 audio; the whole request at most 10 MB, so about 7.5 MB of audio, and 60 s). Answer {results: [{alternatives: [{transcript,
    confidence, words: [{startOffset, endOffset, word, speakerLabel}]}], resultEndOffset, languageCode}],
    metadata}; durations are protobuf JSON strings ("1.500s").
POST /v1beta/models/{model}:generateContent
    JSON {contents: [{parts: [{text}]}], generationConfig: {responseModalities: ["AUDIO"], speechConfig:
    {voiceConfig: {prebuiltVoiceConfig: {voiceName}}} or, for a dialogue, {multiSpeakerVoiceConfig:
    {speakerVoiceConfigs: [{speaker, voiceConfig: {prebuiltVoiceConfig: {voiceName}}}] (exactly two)}}, and
    languageCode?}. Answer candidates[0].content.parts[0].inlineData
    {mimeType "audio/L16;codec=pcm;rate=24000", data: base64 s16le}, usageMetadata (token counts).
Auth: `x-goog-api-key` (or ?key=), else `Authorization: Bearer <token>` (+ x-goog-user-project). An invalid
API key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, as Google answers it.
Errors: {"error": {"code", "message", "status", "details"}}.

Also here: what the Google, Deepgram and ElevenLabs fakes "hear". Audio whose bytes are a file of the dev
set is transcribed as that file's reference text (manifest.jsonl); other audio as placeholder words
"c<call>w<i>", one per half second. Words are spread evenly over the measured duration; with diarization
the first half is one speaker and the rest another. hear_tone_speakers: audio of tone-burst "words" in two
pitches, each pitch a speaker, numbered per request (for speakers across long-audio chunks).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runner import Call, FakeServer, Reply, probe, tone

DEV_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio" / "dev"


# ---- shared by the Google, Deepgram and ElevenLabs fakes ----------------------------------------------------
class RawFaults:
    """A fault the shared runner has no verb for: answer exactly this status, body and type."""

    def fail_raw(self: Any, status: int, body: bytes, content_type: str = "application/json", *,
                 times: int = 1, path: str | None = None) -> None:
        self._add(f"raw:{status}", times, path, lambda call: Reply(status, body, {"Content-Type": content_type}))


def measure(call: Call, data: bytes, raw: tuple[int, int] | None = None) -> dict[str, Any]:
    """Decode the audio in a request (raw=(rate, channels) for headerless s16le) and note what it is in
    call.info; ValueError when it is not audio."""
    if raw is not None:
        rate, channels = raw
        info = {"container": "pcm", "duration": len(data) / (2 * rate * channels),
                "sha256": hashlib.sha256(data).hexdigest()}
    else:
        p = probe(data)
        if not p.duration:
            raise ValueError("no samples")
        info = {"container": p.container, "duration": p.duration, "sha256": p.sha256}
    call.info.update(info)
    return info


_manifest: dict[str, dict[str, Any]] | None = None
_manifest_lock = threading.Lock()


def reference(sha: str) -> dict[str, Any] | None:
    """The manifest row of the dev-set file with these bytes, if any."""
    global _manifest  # noqa: PLW0603 - loaded once, on first use
    with _manifest_lock:
        if _manifest is None:
            _manifest = {}
            for line in (DEV_AUDIO / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    p = DEV_AUDIO / row["file"]
                    if p.exists():
                        _manifest[hashlib.sha256(p.read_bytes()).hexdigest()] = row
        return _manifest.get(sha)


@dataclass
class HeardWord:
    word: str        # as said: lower case, no punctuation
    punctuated: str  # as a formatting model writes it
    start: float
    end: float
    speaker: int


def hear_audio(info: dict[str, Any], call_no: int, diarize: bool) -> tuple[list[HeardWord], str]:
    """(words, ISO 639-1 language) the fake 'recognizes' in measured audio."""
    row = reference(info["sha256"])
    duration = info["duration"]
    if row is not None:
        tokens = row["text"].lower().split()
        lang = row["language"].split("+")[0]
    else:
        tokens = [f"c{call_no}w{i}" for i in range(max(1, int(duration / 0.5)))]
        lang = "en"
    n = len(tokens)
    step = duration * 0.9 / n
    words = []
    for i, t in enumerate(tokens):
        start = duration * 0.05 + i * step
        p = t.capitalize() if i == 0 else t
        if i == n - 1 and not p.endswith((".", "?", "!")):
            p += "."
        bare = re.sub(r"[^\w']", "", t) or t
        words.append(HeardWord(bare, p, round(start, 3), round(start + step * 0.8, 3),
                               1 if diarize and i >= n // 2 and n > 1 else 0))
    return words, lang


# Two "voices" for diarization tests: words are tone bursts, a low voice under 350 Hz and a high one above.
TONE_VOICES = ("lo", "hi")


def hear_tone_speakers(samples: np.ndarray, rate: int) -> list[HeardWord]:
    """Words in audio made of tone bursts (tests/test_diarize_chunks.py): each run of sound of at least 0.1 s
    is a word, "lo" or "hi" by its pitch, and speakers are numbered 0, 1 in order of first appearance IN THIS
    REQUEST, as Deepgram and ElevenLabs number them; so the same voice can be speaker 0 in one request and 1
    in the next."""
    hop = max(1, rate // 100)  # 10 ms frames
    n = len(samples) // hop
    if n == 0:
        return []
    frames = samples[:n * hop].astype(np.float64).reshape(n, hop)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 0.02
    words: list[HeardWord] = []
    order: dict[str, int] = {}
    i = 0
    while i < n:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < n and loud[j]:
            j += 1
        if j - i >= 10:
            seg = samples[i * hop:j * hop].astype(np.float64)
            spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
            freq = float(np.argmax(spec)) * rate / len(seg)
            voice = TONE_VOICES[0] if freq < 350 else TONE_VOICES[1]
            spk = order.setdefault(voice, len(order))
            words.append(HeardWord(voice, voice, round(i * hop / rate, 3), round(j * hop / rate, 3), spk))
        i = j
    return words


def s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


# ---- Google ---------------------------------------------------------------------------------------------
GEMINI_VOICES = {"Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
                 "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
                 "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird",
                 "Zubenelgenubi", "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat"}
TTS_MODELS = {"gemini-2.5-flash-preview-tts", "gemini-2.5-pro-preview-tts"}
SPEECH_CONFIG_FIELDS = {"voiceConfig", "multiSpeakerVoiceConfig", "languageCode"}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}
CONFIG_FIELDS = {"autoDecodingConfig", "explicitDecodingConfig", "model", "languageCodes", "features",
                 "adaptation", "transcriptNormalization", "translationConfig", "denoiserConfig"}
FEATURE_FIELDS = {"profanityFilter", "enableWordTimeOffsets", "enableWordConfidence", "enableAutomaticPunctuation",
                  "enableSpokenPunctuation", "enableSpokenEmojis", "multiChannelMode", "diarizationConfig",
                  "maxAlternatives"}
LOCALE = re.compile(r"^(auto|[a-z]{2,3}(-[A-Za-z]{4})?(-([A-Z]{2}|[0-9]{3}))?)$")
RECOGNIZE = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/recognizers/([^/:]+):(\w+)$")
GENERATE = re.compile(r"^/v1beta/models/([^/:]+):(\w+)$")
TOKENS_PER_AUDIO_SECOND = 25
SECONDS_PER_CHAR = 0.05


class GoogleFake(RawFaults, FakeServer):
    def __init__(self, api_key: str = "google-test-key", *, project: str = "test-project", location: str = "us",
                 access_token: str | None = None):
        super().__init__(api_key)
        self.project, self.location, self.access_token = project, location, access_token

    def error(self, status: int, message: str, reason: str | None = None, **kw: Any) -> Reply:
        err: dict[str, Any] = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
        if reason:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                               "domain": "googleapis.com"}]
        return Reply.json({"error": err}, status)

    def malformed_reply(self, call: Call) -> Reply:
        return Reply(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})

    def handle(self, call: Call) -> Reply:
        if call.method != "POST":
            return self.reject(405, f"method {call.method} not allowed")
        if m := RECOGNIZE.match(call.path):
            return self.recognize(call, *m.groups())
        if m := GENERATE.match(call.path):
            return self.generate(call, *m.groups())
        return self.reject(404, f"no route {call.path}")

    def auth(self, call: Call, *, speech: bool) -> Reply | None:
        key = call.headers.get("x-goog-api-key") or call.q1("key")
        bearer = call.headers.get("authorization", "")
        if key is not None:
            if key != self.api_key:
                return self.error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
            return None
        if bearer:
            if not self.access_token or bearer != f"Bearer {self.access_token}":
                return self.error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                       "token, login cookie or other valid authentication credential.")
            if speech and call.headers.get("x-goog-user-project") not in (None, self.project):
                return self.error(403, "The caller does not have permission")
            return None
        if speech:
            return self.error(401, "Request is missing required authentication credential.")
        return self.error(403, "Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API.")

    def json_body(self, call: Call) -> dict[str, Any] | None:
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(call.json, dict):
            return None
        return call.json

    # ---- Speech-to-Text v2 recognize ------------------------------------------------------------------
    def recognize(self, call: Call, project: str, location: str, recognizer: str, method: str) -> Reply:
        if method != "recognize":
            return self.reject(404, f"Method not found: {method}")
        if (denied := self.auth(call, speech=True)) is not None:
            return denied
        if project != self.project:
            return self.reject(403, f"Permission denied on resource project {project}.")
        if location != self.location:
            return self.reject(400, f"The recognizer location {location} does not match the endpoint's "
                                    f"({self.location}).")
        body = self.json_body(call)
        if body is None:
            return self.reject(400, "Invalid JSON payload received.")
        for k in body:
            if k not in {"config", "configMask", "content", "uri"}:
                return self.reject(400, f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.')
        config = body.get("config") or {}
        for k in config:
            if k not in CONFIG_FIELDS:
                return self.reject(400, f"Invalid JSON payload received. Unknown name \"{k}\" at 'config': "
                                        "Cannot find field.")
        if recognizer == "_" and ("autoDecodingConfig" in config) == ("explicitDecodingConfig" in config):
            return self.reject(400, "Exactly one of auto_decoding_config or explicit_decoding_config must be set.")
        if config.get("model") != "chirp_3":
            return self.reject(400, f'The model "{config.get("model")}" does not exist in the location named '
                                    f'"{self.location}".')
        codes = config.get("languageCodes")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str) and LOCALE.match(c) for c in codes):
            return self.reject(400, f"Invalid recognizer language codes: {codes!r}.")
        features = config.get("features") or {}
        for k in features:
            if k not in FEATURE_FIELDS:
                return self.reject(400, f"Invalid JSON payload received. Unknown name \"{k}\" at "
                                        "'config.features': Cannot find field.")
        diar = features.get("diarizationConfig")
        if diar is not None:
            lo, hi = diar.get("minSpeakerCount"), diar.get("maxSpeakerCount")
            if set(diar) - {"minSpeakerCount", "maxSpeakerCount"} or not isinstance(lo, int) \
                    or not isinstance(hi, int) or not 1 <= lo <= hi:
                return self.reject(400, "Invalid diarization config.")
        if not isinstance(body.get("content"), str):
            return self.reject(400, "Exactly one of content or uri must be set.")
        try:
            audio = base64.b64decode(body["content"], validate=True)
        except ValueError:
            return self.reject(400, "Invalid value at 'content' (TYPE_BYTES), Base64 decoding failed.")
        if len(call.body) > 10 * 1024 * 1024:  # the limit is on the request (base64 text), not the audio bytes
            return self.reject(400, "Request payload size exceeds the limit: 10485760 bytes.")
        try:
            info = measure(call, audio)
        except ValueError:
            return self.reject(400, "Audio data does not appear to be in a supported encoding.")
        if info["duration"] > 60.0:
            return self.reject(400, "Audio can be of a maximum of 60 seconds.")
        words, lang = hear_audio(info, call.index, diar is not None)
        locale = codes[0] if codes[0] != "auto" else {"en": "en-US", "zh": "cmn-Hans-CN"}.get(lang, f"{lang}-{lang.upper()}")
        want_words = bool(features.get("enableWordTimeOffsets"))
        results = []
        for i in range(0, len(words), 10):  # one result per ~10 words, as for pauses in speech
            group = words[i:i + 10]
            alt: dict[str, Any] = {"transcript": (" " if i else "") + " ".join(w.punctuated for w in group),
                                   "confidence": 0.93}
            if want_words:
                alt["words"] = [{"startOffset": f"{w.start:.3f}s", "endOffset": f"{w.end:.3f}s", "word": w.punctuated,
                                 **({"speakerLabel": str(w.speaker + 1)} if diar is not None else {})}
                                for w in group]
            end = min(group[-1].end + 0.2, info["duration"])
            results.append({"alternatives": [alt], "resultEndOffset": f"{end:.3f}s", "languageCode": locale.lower()})
        results.append({"resultEndOffset": f"{info['duration']:.3f}s", "languageCode": locale.lower()})
        return Reply.json({"results": results,
                           "metadata": {"requestId": str(uuid.uuid4()),
                                        "totalBilledDuration": f"{math.ceil(info['duration'])}s"}})

    # ---- Gemini generateContent (TTS) -----------------------------------------------------------------
    @staticmethod
    def check_speakers(msc: Any) -> str | None:
        """speechConfig.multiSpeakerVoiceConfig as the Gemini API types it (google-genai types.MultiSpeakerVoiceConfig
        {speakerVoiceConfigs: [SpeakerVoiceConfig {speaker, voiceConfig: {prebuiltVoiceConfig: {voiceName}}}]});
        Gemini TTS speaks a dialogue of exactly two speakers (ai.google.dev/gemini-api/docs/speech-generation,
        checked 2026-12-07). The problem, or None."""
        if not isinstance(msc, dict) or set(msc) != {"speakerVoiceConfigs"}:
            return "multi_speaker_voice_config: expected exactly the field speaker_voice_configs"
        cfgs = msc["speakerVoiceConfigs"]
        if not isinstance(cfgs, list) or len(cfgs) != 2:
            n = len(cfgs) if isinstance(cfgs, list) else 0
            return f"The number of enabled_voices ({n}) must be equal to 2."
        names = []
        for c in cfgs:
            if not isinstance(c, dict) or set(c) != {"speaker", "voiceConfig"}:
                return "speaker_voice_configs[]: expected exactly speaker and voice_config"
            if not isinstance(c["speaker"], str) or not c["speaker"].strip():
                return "speaker_voice_configs[].speaker: must not be empty"
            vc = c["voiceConfig"]
            if not isinstance(vc, dict) or set(vc) != {"prebuiltVoiceConfig"} \
                    or not isinstance(vc["prebuiltVoiceConfig"], dict) \
                    or set(vc["prebuiltVoiceConfig"]) != {"voiceName"}:
                return "speaker_voice_configs[].voice_config: expected prebuilt_voice_config {voice_name}"
            if vc["prebuiltVoiceConfig"]["voiceName"] not in GEMINI_VOICES:
                return f"Voice name {vc['prebuiltVoiceConfig']['voiceName']} is not supported."
            names.append(c["speaker"])
        if len(set(names)) != len(names):
            return "speaker_voice_configs: speaker names must be unique"
        return None

    def generate(self, call: Call, model: str, method: str) -> Reply:
        if method != "generateContent":
            return self.reject(404, f"Method not found: {method}")
        if (denied := self.auth(call, speech=False)) is not None:
            return denied
        if model not in TTS_MODELS:
            return self.reject(404, f"models/{model} is not found for API version v1beta, or is not supported "
                                    "for generateContent.")
        body = self.json_body(call)
        if body is None:
            return self.reject(400, "Invalid JSON payload received.")
        for k in body:
            if k not in {"contents", "generationConfig", "model", "systemInstruction", "safetySettings"}:
                return self.reject(400, f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.')
        try:
            text = "".join(p["text"] for c in body["contents"] for p in c["parts"])
        except (KeyError, TypeError):
            return self.reject(400, "* GenerateContentRequest.contents: contents is not specified")
        gc = body.get("generationConfig") or {}
        if [m.upper() for m in gc.get("responseModalities") or []] != ["AUDIO"]:
            return self.reject(400, "The requested combination of response modalities (TEXT) is not supported "
                                    "by the model.")
        sc = gc.get("speechConfig") or {}
        for k in sc:
            if k not in SPEECH_CONFIG_FIELDS:
                return self.reject(400, f'Invalid JSON payload received. Unknown name "{k}" at '
                                        f"'generation_config.speech_config': Cannot find field.")
        if "multiSpeakerVoiceConfig" in sc:
            if "voiceConfig" in sc:
                return self.reject(400, "speech_config: voice_config and multi_speaker_voice_config are mutually "
                                        "exclusive.")
            bad = self.check_speakers(sc["multiSpeakerVoiceConfig"])
            if bad is not None:
                return self.reject(400, bad)
            call.info["speakers"] = {c["speaker"]: c["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
                                     for c in sc["multiSpeakerVoiceConfig"]["speakerVoiceConfigs"]}
        else:
            voice = ((sc.get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {}).get("voiceName")
            if voice not in GEMINI_VOICES:
                return self.reject(400, f"Voice name {voice} is not supported.")
        if not text.strip():
            return self.reject(400, "* GenerateContentRequest.contents[0].parts[0].text: empty text")
        seconds = max(0.3, SECONDS_PER_CHAR * len(text))
        pcm = s16(tone(seconds, 24000))
        call.reply_bytes = pcm
        prompt_tokens = max(1, math.ceil(len(text) / 4))
        audio_tokens = math.ceil(seconds * TOKENS_PER_AUDIO_SECOND)
        call.info.update(prompt_tokens=prompt_tokens, audio_tokens=audio_tokens)
        return Reply.json({
            "candidates": [{"content": {"role": "model", "parts": [{"inlineData": {
                "mimeType": "audio/L16;codec=pcm;rate=24000", "data": base64.b64encode(pcm).decode()}}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": audio_tokens,
                              "totalTokenCount": prompt_tokens + audio_tokens,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                              "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": audio_tokens}]},
            "modelVersion": model, "responseId": uuid.uuid4().hex[:22]})
