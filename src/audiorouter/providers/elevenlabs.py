"""ElevenLabs: Scribe speech-to-text (POST /v1/speech-to-text, multipart) and text-to-speech
(POST /v1/text-to-speech/{voice_id}/stream).

Auth: the `xi-api-key` header (api_key_env, default ELEVENLABS_API_KEY). base_url may or may not end in /v1.

Transcription uploads the file as it is (headerless PCM as file_format=pcm_s16le_16) with word timestamps;
`diarize`, `language` (language_code) and `temperature` follow the request; audio-event tags are off unless
`provider.options.elevenlabs.tag_audio_events` is true. Scribe returns a flat token list (words, spacing,
audio events); segments are rebuilt from it: a new one at each sentence end, speaker change or long pause.
Other per-request options: num_speakers, diarization_threshold, seed, and keyterms (scribe_v2 only; sent as
one form field holding a JSON array of strings).

Speech: the catalog voice name is mapped to a voice id by the endpoint's voice_map (the router does that);
mp3 comes from ElevenLabs as mp3_44100_128, every other format as pcm_24000 encoded by the gateway.
speed goes into voice_settings (ElevenLabs accepts 0.7 to 1.2). Options: stability, similarity_boost,
style, use_speaker_boost (voice_settings), language_code, seed, apply_text_normalization. With timestamps
"word" the same body goes to /v1/text-to-speech/{voice_id}/stream/with-timestamps (pcm_24000, newline-delimited
JSON chunks of base64 audio and character timings), and the words made from the characters ride on the
SpeechStream (jobs/speech_timings.py).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from ..core import languages
from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import GatewayError, InvalidRequest
from ..core.types import Segment, SpeechRequest, Transcript, TranscriptionRequest, Word
from .http import HTTPProvider, Response

MIME = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg",
    "webm": "audio/webm", "m4a": "audio/mp4", "mp4": "video/mp4", "aac": "audio/aac", "aiff": "audio/aiff",
    "amr": "audio/amr", "asf": "audio/x-ms-asf",
}
SPEED_RANGE = (0.7, 1.2)
SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
PAUSE_S = 1.5       # a silence this long between words starts a new segment
MAX_SEGMENT_S = 30.0


def _flag(v: Any, name: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    raise InvalidRequest(f"provider.options.elevenlabs.{name}: expected a boolean",
                         param=f"provider.options.elevenlabs.{name}")


def _number(v: Any, name: str, lo: float, hi: float, integer: bool = False) -> float | int:
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
          and (not integer or float(v).is_integer()))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InvalidRequest(f"provider.options.elevenlabs.{name}: expected {kind} from {lo:g} to {hi:g}",
                             param=f"provider.options.elevenlabs.{name}")
    return int(v) if integer else float(v)


def _string(v: Any, name: str) -> str:
    if isinstance(v, str) and v.strip():
        return v
    raise InvalidRequest(f"provider.options.elevenlabs.{name}: expected a non-empty string",
                         param=f"provider.options.elevenlabs.{name}")


def build_segments(tokens: list[dict[str, Any]], diarize: bool) -> list[Segment]:
    """Scribe's token list (type word | spacing | audio_event) -> segments of words."""
    segments: list[Segment] = []
    cur_words: list[Word] = []
    cur_text: list[str] = []
    cur_start: float | None = None
    cur_end = 0.0

    def flush() -> None:
        nonlocal cur_words, cur_text, cur_start
        text = "".join(cur_text).strip()
        if text and cur_start is not None:
            spk = cur_words[0].speaker if cur_words else None
            segments.append(Segment(len(segments), round(cur_start, 3), round(cur_end, 3), text, words=cur_words,
                                    speaker=spk))
        cur_words, cur_text, cur_start = [], [], None

    for t in tokens:
        kind = t.get("type") or "word"
        text = str(t.get("text") or "")
        if kind == "spacing":
            if cur_text:
                cur_text.append(text)
            continue
        start = float(t.get("start") or 0.0)
        end_v = t.get("end")
        end = max(float(end_v) if end_v is not None else start, start)
        spk = t.get("speaker_id") if diarize else None
        if cur_start is not None:
            prev_spk = cur_words[-1].speaker if cur_words else None
            if (kind == "word" and cur_words and spk != prev_spk) or start - cur_end >= PAUSE_S \
                    or end - cur_start > MAX_SEGMENT_S:
                flush()
        if cur_start is None:
            cur_start = start
        cur_text.append(text)
        cur_end = end
        if kind == "word":
            lp = t.get("logprob")
            prob = math.exp(float(lp)) if isinstance(lp, (int, float)) and not isinstance(lp, bool) else None
            cur_words.append(Word(text.strip(), round(start, 3), round(end, 3), prob,
                                  str(spk) if spk is not None else None))
            if text.rstrip().endswith(SENTENCE_END):
                flush()
    flush()
    return segments


class ElevenLabsProvider(HTTPProvider):
    speed_range = SPEED_RANGE  # voice_settings.speed (the models API's speed range: api/models.py)

    def url(self, path: str) -> str:
        base = self.base_url
        if base.endswith("/v1"):
            base = base[:-3]
        return f"{base}/v1/{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"xi-api-key": self.api_key or ""}

    def refine_upstream_error(self, e: GatewayError, resp: Response) -> GatewayError:
        """ElevenLabs' envelope: {"detail": {"status", "message"}} or, for validation, {"detail": [{"loc", "msg"}]}."""
        code = None
        try:
            body = resp.json()
            detail = body.get("detail") if isinstance(body, dict) else None
            if isinstance(detail, dict):
                code = detail.get("status") or detail.get("code") or detail.get("type")
            elif isinstance(detail, list) and detail and isinstance(detail[0], dict):
                d = detail[0]
                loc = ".".join(str(x) for x in d.get("loc") or [] if x != "body")
                detail_msg = f"{loc}: {d.get('msg')}" if loc else str(d.get("msg"))
                e.message = self.scrub(f"{self.slug}: upstream answered {resp.status_code}: {detail_msg}", 400)
        except ValueError:
            pass
        if code:
            e.metadata.setdefault("upstream_code", str(code))
        return e

    # ---- speech-to-text ----------------------------------------------------------------------------------
    def stt_form(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                 options: dict[str, Any]) -> dict[str, Any]:
        diarize = bool(req.extra.get("diarize"))
        form: dict[str, Any] = {"model_id": endpoint.upstream_model, "timestamps_granularity": "word",
                                "diarize": "true" if diarize else "false", "tag_audio_events": "false"}
        language = options.get("language_code", req.language)
        if language is not None:
            form["language_code"] = _string(language, "language_code")
        if req.temperature is not None:
            form["temperature"] = f"{req.temperature:g}"
        if audio.format == "pcm":
            form["file_format"] = "pcm_s16le_16"
        for k, v in options.items():
            if k == "tag_audio_events":
                form[k] = _flag(v, k)
            elif k == "num_speakers":
                form[k] = str(_number(v, k, 1, 32, integer=True))
            elif k == "diarization_threshold":
                form[k] = f"{_number(v, k, 0.1, 0.4):g}"
            elif k == "seed":
                form[k] = str(_number(v, k, 0, 2147483647, integer=True))
            elif k == "keyterms":
                if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                    raise InvalidRequest("provider.options.elevenlabs.keyterms: expected a list of strings",
                                         param="provider.options.elevenlabs.keyterms")
            elif k != "language_code":
                raise InvalidRequest(f"provider.options.elevenlabs.{k}: not a supported option for transcription",
                                     param=f"provider.options.elevenlabs.{k}")
        terms = list(req.extra.get("keyterms") or []) + list(options.get("keyterms") or [])
        if terms and endpoint.upstream_model.startswith("scribe_v2"):
            # one field holding a JSON array (what the current SDK sends for scribe_v2), not repeated fields
            form["keyterms"] = json.dumps(terms, ensure_ascii=False)
        return form

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        if req.task != "transcribe":
            raise InvalidRequest(f"task: {endpoint.upstream_model} does not translate", param="task")
        form = self.stt_form(req, audio, endpoint, options)
        fmt = audio.format or "bin"
        name = audio_filename(audio, fmt)
        files = {"file": (name, audio.data, MIME.get(fmt, "application/octet-stream"))}
        resp = await self.post_checked(self.url("speech-to-text"), data=form, files=files, headers=self.auth)
        try:
            return self.parse(resp.json(), diarize=bool(req.extra.get("diarize")), fallback_language=req.language)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise self._malformed(f"{e.__class__.__name__}: {e}") from None

    @staticmethod
    def parse(body: dict[str, Any], *, diarize: bool, fallback_language: str | None = None) -> Transcript:
        if "transcripts" in body and "text" not in body:  # multichannel answer: take the first channel
            body = body["transcripts"][0]
        text = body["text"]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        tokens = [t for t in body.get("words") or [] if isinstance(t, dict)]
        segments = build_segments(tokens, diarize)
        if not segments and text.strip():
            segments = [Segment(0, 0.0, float(body.get("audio_duration_secs") or 0.0), text.strip())]
        return Transcript(text=text.strip(), language=languages.code(body.get("language_code")) or fallback_language,
                          segments=segments)

    # ---- text-to-speech ----------------------------------------------------------------------------------
    def tts_body(self, req: SpeechRequest, endpoint, options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"text": req.input, "model_id": endpoint.upstream_model}
        settings: dict[str, Any] = {}
        if req.speed != 1.0:
            lo, hi = SPEED_RANGE
            if not lo <= req.speed <= hi:
                raise InvalidRequest(f"speed: {req.speed:g} is outside what ElevenLabs voices can do ({lo} to {hi})",
                                     param="speed", metadata={"provider_name": self.slug, "min": lo, "max": hi})
            settings["speed"] = req.speed
        for k, v in options.items():
            if k in ("stability", "similarity_boost", "style"):
                settings[k] = _number(v, k, 0.0, 1.0)
            elif k == "use_speaker_boost":
                settings[k] = v if isinstance(v, bool) else _flag(v, k)
            elif k == "language_code":
                body[k] = _string(v, k)
            elif k == "seed":
                body[k] = _number(v, k, 0, 4294967295, integer=True)
            elif k == "apply_text_normalization":
                if v not in ("auto", "on", "off"):
                    raise InvalidRequest("provider.options.elevenlabs.apply_text_normalization: use auto, on or off",
                                         param="provider.options.elevenlabs.apply_text_normalization")
                body[k] = v
            else:
                raise InvalidRequest(f"provider.options.elevenlabs.{k}: not a supported option for speech",
                                     param=f"provider.options.elevenlabs.{k}")
        if settings:
            body["voice_settings"] = settings
        return body

    speech_word_timestamps = True  # jobs/speech_timings.py: the words come from the upstream, not an alignment

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        body = self.tts_body(req, endpoint, options)
        if req.timestamps == "word":
            return await self._synthesize_timed(body, voice)
        if req.response_format == "mp3":
            output_format, encoding, rate = "mp3_44100_128", "mp3", 44100
        else:
            output_format, encoding, rate = "pcm_24000", "pcm", 24000
        url = self.url(f"text-to-speech/{quote(voice, safe='')}/stream")
        resp = await self.open_audio_stream(url, params={"output_format": output_format}, json=body, headers=self.auth)
        return SpeechStream(self.drain(resp), encoding, rate)

    async def _synthesize_timed(self, body: dict[str, Any], voice: str) -> SpeechStream:
        """POST /v1/text-to-speech/{voice_id}/stream/with-timestamps: newline-delimited JSON objects
        {audio_base64, alignment: {characters, character_start_times_seconds, character_end_times_seconds},
        normalized_alignment} (elevenlabs-python's StreamingAudioChunkWithTimestampsResponse). Always pcm_24000,
        so the audio's length, and any chunk-relative offset, is known exactly; the words (from `alignment`,
        the text as sent) are on the stream once it is drained."""
        url = self.url(f"text-to-speech/{quote(voice, safe='')}/stream/with-timestamps")
        resp = await self.open_checked(url, params={"output_format": "pcm_24000"}, json=body, headers=self.auth)
        words: list[Word] = []
        return SpeechStream(self._timed_chunks(resp, words), "pcm", 24000, words=words)

    async def _timed_chunks(self, resp: Response, words: list[Word]) -> AsyncIterator[bytes]:
        chars: list[tuple[str, float, float]] = []
        audio_bytes = 0
        try:
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    audio = base64.b64decode(obj.get("audio_base64") or "", validate=True)
                    got = _alignment(obj.get("alignment"))
                except (ValueError, TypeError, AttributeError, KeyError, binascii.Error) as e:
                    raise self._malformed(f"with-timestamps chunk: {e.__class__.__name__}") from None
                # Times are from the start of the whole audio; a chunk whose times start over (before what
                # came already) is taken as relative to its own audio, placed where that audio begins.
                offset = audio_bytes / 48000.0 if got and chars and got[0][1] < chars[-1][1] - 0.05 else 0.0
                chars.extend((c, a + offset, b + offset) for c, a, b in got)
                audio_bytes += len(audio)
                if audio:
                    yield audio
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        finally:
            await resp.aclose()
        if not audio_bytes:
            raise self._malformed("empty audio")
        words.extend(char_words(chars))


def _alignment(a: Any) -> list[tuple[str, float, float]]:
    if a is None:
        return []
    cs, ss, es = a["characters"], a["character_start_times_seconds"], a["character_end_times_seconds"]
    if not (len(cs) == len(ss) == len(es)):
        raise ValueError("alignment arrays of different lengths")
    return [(str(c), float(s), float(e)) for c, s, e in zip(cs, ss, es)]


def char_words(chars: list[tuple[str, float, float]]) -> list[Word]:
    """Character timings -> words: split at whitespace, punctuation at either end left out of the word (and of
    its times); a token of punctuation alone is no word."""
    out: list[Word] = []
    cur: list[tuple[str, float, float]] = []

    def flush() -> None:
        keep = [k for k, t in enumerate(cur) if t[0].isalnum()]
        if keep:
            span = cur[keep[0]:keep[-1] + 1]
            start, end = span[0][1], max(span[-1][2], span[0][1])
            out.append(Word("".join(c for c, _, _ in span), round(start, 3), round(end, 3)))
        cur.clear()

    for t in chars:
        if t[0].isspace():
            flush()
        else:
            cur.append(t)
    flush()
    return out


def audio_filename(audio: PreparedAudio, fmt: str) -> str:
    return f"audio.{'raw' if fmt == 'pcm' else fmt}"
