"""Google: Cloud Speech-to-Text v2 `recognize` (Chirp 3) for transcription and the Gemini API
`generateContent` for speech (Gemini TTS).

Two APIs, two base URLs, one provider entry (catalog `providers.google`):

  base_url            Speech-to-Text. A `{location}` in it is replaced by the location, so the shipped
                      https://{location}-speech.googleapis.com becomes https://us-speech.googleapis.com;
                      location "global" gives https://speech.googleapis.com.
  options.gemini_base_url   the Gemini API (default https://generativelanguage.googleapis.com).
  options.project     Cloud project id for Speech-to-Text (or options.project_env, default GOOGLE_CLOUD_PROJECT).
  options.location    recognizer location (default "us"; Chirp 3 is served from us, eu and some regions).
  options.recognizer  recognizer id (default "_": the implicit recognizer, configured inline per request).
  options.chunk_seconds     sync recognize takes at most 60 s of audio: the adapter declares at most this
                      many seconds per call (default 55, max_audio_seconds), so the transcription job
                      cuts longer input at pauses into chunks that fit and stitches them back with
                      offset timestamps (jobs/transcription.py: the one chunk-and-stitch path).

Authentication, in this order:
  1. an API key (api_key_env, default GOOGLE_API_KEY), sent as the `x-goog-api-key` header to both APIs
     (never as `?key=`, so it cannot end up in a logged URL);
  2. else a static OAuth 2 access token from the env var named by options.access_token_env (default
     GOOGLE_ACCESS_TOKEN), sent as `Authorization: Bearer`, with `x-goog-user-project: <project>` on
     Speech-to-Text. Tokens expire (about an hour); refreshing them is up to the operator.

Per-request options (request `provider.options.google`): language_codes (list of BCP-47 codes, overrides
`language`), min_speakers / max_speakers (diarization), language_code (Gemini TTS).

Multi-speaker speech (input as turns in two voices, catalog capability multi_speaker): one generateContent call
with speechConfig.multiSpeakerVoiceConfig.speakerVoiceConfigs [{speaker: "Speaker1", voiceConfig:
{prebuiltVoiceConfig: {voiceName}}}, {speaker: "Speaker2", ...}] and the prompt written as that dialogue
(Gemini API speech-generation guide, checked 2026-12-07); more than two voices is a 400 naming `input`.
"""
from __future__ import annotations

import base64
import os
import re
from typing import Any

from ..audio import convert
from ..core import languages
from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import GatewayError, InvalidRequest, PayloadTooLarge, UpstreamError
from ..core.types import Segment, SpeechRequest, Transcript, TranscriptionRequest, Word
from .http import HTTPProvider, Response

GEMINI_BASE = "https://generativelanguage.googleapis.com"
# recognize: the 10 MB limit is on the request, whose content is base64 (4 characters per 3 bytes), so the
# audio itself may be at most about 7.5 MB; REQUEST_SLACK leaves room for the config around it.
MAX_REQUEST_BYTES = 10_000_000
REQUEST_SLACK = 16_384


def request_bytes(n: int) -> int:
    """The size of a recognize request carrying `n` bytes of audio (base64 plus room for the config)."""
    return 4 * ((n + 2) // 3) + REQUEST_SLACK
MAX_RECOGNIZE_SECONDS = 59.0
# autoDecodingConfig handles these containers; anything else is re-encoded to FLAC from the decoded samples
DEFAULT_INPUT_FORMATS = ("wav", "flac", "mp3", "opus", "webm", "m4a", "mp4", "amr")
PCM_CHUNK = 24000  # bytes per yielded chunk of synthesized audio (0.5 s at 24 kHz)
_MIME_RATE = re.compile(r"rate=(\d+)")


def duration_s(v: Any) -> float | None:
    """A protobuf Duration as JSON ("1.500s"), or {seconds, nanos}, in seconds."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str) and v.endswith("s"):
        return float(v[:-1])
    if isinstance(v, dict):
        return float(v.get("seconds", 0)) + float(v.get("nanos", 0)) / 1e9
    raise ValueError(f"not a duration: {v!r}")


class GoogleProvider(HTTPProvider):
    # ---- configuration -----------------------------------------------------------------------------
    @property
    def opts(self) -> dict[str, Any]:
        return self.spec.options or {}

    @property
    def access_token(self) -> str | None:
        env = self.opts.get("access_token_env", "GOOGLE_ACCESS_TOKEN")
        return os.environ.get(env) if env else None

    def available(self) -> bool:
        return bool(self.api_key or self.access_token)

    @property
    def project(self) -> str | None:
        return self.opts.get("project") or os.environ.get(self.opts.get("project_env", "GOOGLE_CLOUD_PROJECT") or "")

    @property
    def location(self) -> str:
        return str(self.opts.get("location") or "us")

    def speech_base(self) -> str:
        base = self.base_url or "https://{location}-speech.googleapis.com"
        if "{location}" in base:
            base = (base.replace("{location}-", "") if self.location == "global"
                    else base.replace("{location}", self.location))
        return base.rstrip("/")

    def gemini_base(self) -> str:
        return str(self.opts.get("gemini_base_url") or GEMINI_BASE).rstrip("/")

    def _headers(self, *, speech: bool) -> dict[str, str]:
        if self.api_key:
            return {"x-goog-api-key": self.api_key}
        token = self.access_token
        if not token:
            raise UpstreamError(f"{self.slug}: no credentials (set the API key or the access token env var)",
                                retryable=False, metadata={"provider_name": self.slug})
        h = {"Authorization": f"Bearer {token}"}
        if speech and self.project:
            h["x-goog-user-project"] = self.project
        return h

    # ---- HTTP ------------------------------------------------------------------------------------------
    def secrets(self) -> list[str | None]:
        return [self.api_key, self.access_token]

    def refine_upstream_error(self, e: GatewayError, resp: Response) -> GatewayError:
        """Google's envelope is {"error": {"code", "message", "status", "details": [{"reason"}]}}. An invalid
        API key comes back as 400 INVALID_ARGUMENT / API_KEY_INVALID: that is our fault, not the client's."""
        status_name, reasons = "", set()
        try:
            err = resp.json().get("error", {})
            status_name = str(err.get("status") or "")
            reasons = {str(d.get("reason")) for d in err.get("details") or [] if isinstance(d, dict)}
        except (ValueError, AttributeError):
            pass
        if status_name:
            e.message = e.message.replace(f"answered {resp.status_code}:",
                                          f"answered {resp.status_code} {status_name}:", 1)
            e.metadata.setdefault("upstream_code", status_name)
        if resp.status_code == 400 and ("API_KEY_INVALID" in reasons or "API key not valid" in e.message):
            # treated as the 401 it means: the router moves on to another provider instead of retrying
            e = UpstreamError(e.message, retryable=True, upstream_status=401, status=502, metadata=e.metadata)
        return e

    async def _post_json(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        resp = await self.post_checked(url, json=body, headers=headers)
        try:
            data = resp.json()
        except ValueError:
            raise self._malformed("the body is not JSON") from None
        if not isinstance(data, dict):
            raise self._malformed("expected a JSON object")
        return data

    # ---- Speech-to-Text v2 -----------------------------------------------------------------------------
    def _language_codes(self, req: TranscriptionRequest, options: dict[str, Any]) -> list[str]:
        codes = options.get("language_codes")
        if codes is not None:
            if isinstance(codes, str):
                codes = [codes]
            if not isinstance(codes, list) or not codes or not all(isinstance(c, str) and c for c in codes):
                raise InvalidRequest("provider.options.google.language_codes: expected a list of BCP-47 codes",
                                     param="provider.options.google.language_codes")
            return codes
        if req.language:
            return [languages.locale(req.language)]
        return ["auto"]

    def _speakers(self, options: dict[str, Any], key: str, default: int) -> int:
        v = options.get(key, default)
        if isinstance(v, str) and v.strip().isdigit():  # a form field (provider[options][google][...]=3)
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 20:
            raise InvalidRequest(f"provider.options.google.{key}: expected an integer from 1 to 20",
                                 param=f"provider.options.google.{key}")
        return v

    def recognize_config(self, req: TranscriptionRequest, endpoint, options: dict[str, Any]) -> dict[str, Any]:
        features: dict[str, Any] = {"enableAutomaticPunctuation": True, "enableWordTimeOffsets": True}
        if req.extra.get("diarize"):
            lo = self._speakers(options, "min_speakers", 1)
            hi = self._speakers(options, "max_speakers", max(lo, 6))
            if lo > hi:
                raise InvalidRequest("provider.options.google.min_speakers: must not exceed max_speakers",
                                     param="provider.options.google.min_speakers")
            features["diarizationConfig"] = {"minSpeakerCount": lo, "maxSpeakerCount": hi}
        return {"autoDecodingConfig": {}, "model": endpoint.upstream_model,
                "languageCodes": self._language_codes(req, options), "features": features}

    def max_audio_seconds(self, endpoint) -> float | None:
        return min(float(self.opts.get("chunk_seconds", 55.0)), MAX_RECOGNIZE_SECONDS)

    async def _content(self, audio: PreparedAudio, endpoint) -> bytes:
        """The audio bytes for one recognize call: the original bytes when Google can take them as they are,
        else FLAC re-encoded from the decoded 16 kHz samples (audio/convert.py: from a chunk's int16 as it is)."""
        native = set(endpoint.input_formats or DEFAULT_INPUT_FORMATS)
        if audio.format in native and request_bytes(len(audio.data)) <= MAX_REQUEST_BYTES:
            return audio.data
        return await convert.encoded(audio, "flac")

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        if req.task != "transcribe":
            raise InvalidRequest(f"task: {endpoint.upstream_model} does not translate", param="task")
        max_s = self.max_audio_seconds(endpoint) or MAX_RECOGNIZE_SECONDS
        if audio.duration > max_s + 0.5:  # the transcription job cuts longer audio first: see max_audio_seconds
            raise PayloadTooLarge(f"audio: {audio.duration:.1f} s is longer than one {self.slug} recognize call "
                                  f"takes ({max_s:.0f} s)", param="audio", metadata={"provider_name": self.slug})
        project = self.project
        if not project:
            raise UpstreamError(f"{self.slug}: no Cloud project configured (set providers.{self.slug}.options.project "
                                "or GOOGLE_CLOUD_PROJECT)", retryable=False, status=503,
                                metadata={"provider_name": self.slug})
        config = self.recognize_config(req, endpoint, options)
        recognizer = self.opts.get("recognizer") or "_"
        url = (f"{self.speech_base()}/v2/projects/{project}/locations/{self.location}"
               f"/recognizers/{recognizer}:recognize")
        content = await self._content(audio, endpoint)
        body = await self._post_json(url, {"config": config, "content": base64.b64encode(content).decode()},
                                     self._headers(speech=True))
        try:
            return self.parse([body], [0.0], diarize=bool(req.extra.get("diarize")), fallback_language=req.language)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise self._malformed(f"{e.__class__.__name__}: {e}") from None

    @staticmethod
    def parse(bodies: list[dict[str, Any]], offsets: list[float], *, diarize: bool,
              fallback_language: str | None = None) -> Transcript:
        segments: list[Segment] = []
        language: str | None = None
        labels: dict[str, str] = {}

        def speaker(label: Any) -> str | None:
            if not diarize or label in (None, ""):
                return None
            return labels.setdefault(str(label), f"speaker_{len(labels)}")

        for body, offset in zip(bodies, offsets):
            results = body.get("results") or []
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise TypeError("results is not a list of objects")
            if diarize and len(results) > 1:
                # some recognizers repeat every word of the audio, with speaker labels, in the final result
                last = (results[-1].get("alternatives") or [{}])[0].get("words") or []
                prev_end = duration_s(results[-2].get("resultEndOffset")) or 0.0
                if last and (duration_s(last[0].get("startOffset")) or 0.0) < prev_end - 0.01:
                    results = results[-1:]
            prev_end = offset
            for r in results:
                language = language or languages.code(r.get("languageCode"))
                end_off = duration_s(r.get("resultEndOffset"))
                alts = r.get("alternatives") or []
                if not isinstance(alts, list):
                    raise TypeError("alternatives is not a list")
                if not alts:
                    prev_end = offset + end_off if end_off is not None else prev_end
                    continue
                alt = alts[0]
                words: list[Word] = []
                raw_labels: list[Any] = []
                for w in alt.get("words") or []:
                    s = offset + (duration_s(w.get("startOffset")) or 0.0)
                    e = offset + (duration_s(w.get("endOffset")) or (s - offset))
                    conf = w.get("confidence")
                    raw_labels.append(w.get("speakerLabel"))
                    words.append(Word(str(w["word"]).strip(), round(s, 3), round(max(e, s), 3),
                                      float(conf) if conf else None, speaker(w.get("speakerLabel"))))
                text = str(alt.get("transcript") or "").strip()
                end = offset + end_off if end_off is not None else (words[-1].end if words else prev_end)
                if diarize and words and any(w.speaker for w in words):
                    run: list[Word] = []
                    for w in [*words, None]:
                        if run and (w is None or w.speaker != run[-1].speaker):
                            segments.append(Segment(0, run[0].start, run[-1].end, " ".join(x.word for x in run),
                                                    words=run, speaker=run[0].speaker))
                            run = []
                        if w is not None:
                            run.append(w)
                elif text or words:
                    start = words[0].start if words else prev_end
                    segments.append(Segment(0, round(start, 3), round(max(end, start), 3),
                                            text or " ".join(w.word for w in words), words=words))
                prev_end = end
        for i, seg in enumerate(segments):
            seg.id = i
        text = " ".join(seg.text.strip() for seg in segments if seg.text.strip())
        return Transcript(text=text, language=language or fallback_language, segments=segments)

    # ---- Gemini TTS ------------------------------------------------------------------------------------
    @staticmethod
    def dialogue(req: SpeechRequest, voice: str) -> tuple[str, dict[str, Any]]:
        """Multi-speaker input (req.turns, their voices already the endpoint's) as Gemini speaks it: the prompt
        "Speaker1: ..." line by line (a turn's instructions in brackets before its text: Gemini is steered in
        words) and speechConfig.multiSpeakerVoiceConfig.speakerVoiceConfigs [{speaker, voiceConfig:
        {prebuiltVoiceConfig: {voiceName}}}], exactly two speakers; turns in one voice use a plain voiceConfig."""
        turns = req.turns or []
        voices = list(dict.fromkeys(t.voice or voice for t in turns))
        if len(voices) > 2:
            raise InvalidRequest(f"input: Gemini TTS speaks a dialogue of at most two voices; these turns use "
                                 f"{len(voices)} ({', '.join(voices)})", param="input",
                                 metadata={"voices": voices})
        alias = {v: (f"Speaker{i + 1}" if len(voices) > 1 else "") for i, v in enumerate(voices)}
        lines = []
        for t in turns:
            say = f"[{t.instructions.strip()}] {t.text.strip()}" if t.instructions else t.text.strip()
            name = alias[t.voice or voice]
            lines.append(f"{name}: {say}" if name else say)
        head = f"{req.instructions.strip().rstrip('.:;!, ')}:\n" if req.instructions and req.instructions.strip() \
            else ""
        if len(voices) == 1:
            return head + "\n".join(lines), {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voices[0]}}}
        intro = f"TTS the following conversation between {alias[voices[0]]} and {alias[voices[1]]}:\n"
        configs = [{"speaker": alias[v], "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": v}}} for v in voices]
        return head + intro + "\n".join(lines), {"multiSpeakerVoiceConfig": {"speakerVoiceConfigs": configs}}

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        text = req.input
        speech_config: dict[str, Any]
        if req.turns:
            text, speech_config = self.dialogue(req, voice)
        else:
            if req.instructions and req.instructions.strip():
                # Gemini TTS is steered in natural language, in the prompt itself ("Say cheerfully: ...")
                text = f"{req.instructions.strip().rstrip('.:;!, ')}: {req.input}"
            speech_config = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}}
        lang = options.get("language_code")
        if lang is not None:
            if not isinstance(lang, str) or not lang:
                raise InvalidRequest("provider.options.google.language_code: expected a BCP-47 code",
                                     param="provider.options.google.language_code")
            speech_config["languageCode"] = lang
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}],
                "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech_config}}
        url = f"{self.gemini_base()}/v1beta/models/{endpoint.upstream_model}:generateContent"
        data = await self._post_json(url, body, self._headers(speech=False))
        try:
            pcm, rate = self.parse_audio(data)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise self._malformed(f"{e.__class__.__name__}: {e}") from None
        usage = u if isinstance(u := data.get("usageMetadata"), dict) else {}
        in_tok = usage.get("promptTokenCount")
        out_tok = usage.get("candidatesTokenCount")

        async def chunks():
            for i in range(0, len(pcm), PCM_CHUNK):
                yield pcm[i:i + PCM_CHUNK]

        return SpeechStream(chunks(), "pcm", rate, input_tokens=in_tok if isinstance(in_tok, int) else None,
                            output_tokens=out_tok if isinstance(out_tok, int) else None)

    def parse_audio(self, data: dict[str, Any]) -> tuple[bytes, int]:
        """candidates[0].content.parts[].inlineData: base64 s16le mono PCM ("audio/L16;codec=pcm;rate=24000"),
        or a WAV. Returns (pcm bytes, rate)."""
        cands = data.get("candidates") or []
        if not cands:
            block = (data.get("promptFeedback") or {}).get("blockReason")
            if block:
                raise InvalidRequest(f"input: {self.slug} refused to speak this text (blockReason {block})",
                                     param="input", metadata={"provider_name": self.slug})
            raise self._malformed("no candidates")
        cand = cands[0]
        pcm = bytearray()
        rate = 24000
        for part in (cand.get("content") or {}).get("parts") or []:
            inline = part.get("inlineData") or part.get("inline_data")
            if not inline:
                continue
            raw = base64.b64decode(inline["data"], validate=True)
            mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
            if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
                raw, rate = _wav_pcm(raw)
            else:
                if not (mime.lower().startswith("audio/l16") or mime.lower().startswith("audio/pcm")):
                    raise ValueError(f"unexpected audio type {mime!r}")
                m = _MIME_RATE.search(mime)
                rate = int(m.group(1)) if m else rate
            pcm += raw
        if not pcm:
            reason = cand.get("finishReason") or "unknown"
            raise UpstreamError(f"{self.slug}: the model returned no audio (finishReason {reason})", retryable=True,
                                metadata={"provider_name": self.slug})
        if len(pcm) % 2:
            pcm = pcm[:-1]
        return bytes(pcm), rate


def _wav_pcm(raw: bytes) -> tuple[bytes, int]:
    """The samples and rate of a 16-bit mono PCM WAV."""
    import struct
    pos, rate, bits, channels = 12, 24000, 16, 1
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8:pos + 8 + size] if size != 0xFFFFFFFF else raw[pos + 8:]
        if cid == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            if bits != 16 or channels != 1:
                raise ValueError(f"unsupported WAV ({channels} channels, {bits} bits)")
            return body, rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV without a data chunk")
