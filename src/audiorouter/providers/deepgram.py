"""Deepgram: pre-recorded transcription (POST /v1/listen, Nova-3) and Aura-2 text-to-speech (POST /v1/speak).

Auth: `Authorization: Token <key>` (api_key_env, default DEEPGRAM_API_KEY). base_url may or may not end in
/v1 (https://api.deepgram.com or https://api.deepgram.com/v1).

Transcription sends the audio bytes as they are, with their Content-Type, and asks for smart formatting,
punctuation and utterances (which become the segments); `diarize`, `language` (else detect_language) and
`keyterms` (keyterm=..., Nova-3) follow the request. Headerless PCM is described with encoding=linear16.
Per-request options (`provider.options.deepgram`): language (e.g. "multi", "en-US") and the listed query
parameters (numerals, profanity_filter, redact, filler_words, ...), passed through.

Speech: model aura-2-<voice>-en (a voice may also name its language, "celeste-es", or be a full model id).
mp3, opus and flac are produced by Deepgram; every other format is streamed as raw linear16 at 24 kHz and
encoded by the gateway. One request takes at most 2,000 characters (max_input_characters): longer text is
split at sentence ends by the speech job (jobs/speech.py) and the pieces' audio joined, as for any endpoint
with limits.max_characters.
"""
from __future__ import annotations

import asyncio
from typing import Any

from ..core import languages
from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import GatewayError, InvalidRequest
from ..core.types import Segment, SpeechRequest, Transcript, TranscriptionRequest, Word
from .http import HTTPProvider, Response

CONTENT_TYPES = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg",
    "webm": "audio/webm", "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac", "aiff": "audio/aiff",
    "amr": "audio/amr", "asf": "audio/x-ms-asf", "mpeg": "audio/mpeg", "mpga": "audio/mpeg",
}
PASSTHROUGH = {"numerals", "profanity_filter", "redact", "filler_words", "dictation", "measurements",
               "utt_split", "tag", "mip_opt_out", "replace", "search", "paragraphs", "detect_entities"}
# response_format -> (query params, stream encoding, rate)
NATIVE_SPEECH = {
    "mp3": ({"encoding": "mp3", "bit_rate": "48000"}, "mp3", 22050),
    "opus": ({"encoding": "opus", "container": "ogg"}, "opus", 48000),
    # Deepgram makes FLAC only at 8000/16000/22050/32000/48000 Hz (its TTS audio format table): not 24000
    "flac": ({"encoding": "flac", "sample_rate": "48000"}, "flac", 48000),
}
PCM_SPEECH = ({"encoding": "linear16", "container": "none", "sample_rate": "24000"}, "pcm", 24000)
MAX_SPEAK_CHARACTERS = 2000  # what one /v1/speak request takes


def _qv(v: Any, name: str) -> list[str]:
    if isinstance(v, bool):
        return ["true" if v else "false"]
    if isinstance(v, (int, float)):
        return [str(v)]
    if isinstance(v, str) and v:
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
        return [str(x) for x in v]
    raise InvalidRequest(f"provider.options.deepgram.{name}: expected a string, number, boolean or list",
                         param=f"provider.options.deepgram.{name}")


class DeepgramProvider(HTTPProvider):
    def url(self, path: str) -> str:
        base = self.base_url
        if base.endswith("/v1"):
            base = base[:-3]
        return f"{base}/v1/{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.api_key}"}

    def refine_upstream_error(self, e: GatewayError, resp: Response) -> GatewayError:
        """Deepgram's envelope: {"err_code", "err_msg", "request_id"} (or {"category", "message"})."""
        try:
            body = resp.json()
            code = body.get("err_code") or body.get("category") if isinstance(body, dict) else None
        except ValueError:
            code = None
        if code:
            e.metadata.setdefault("upstream_code", str(code))
        return e

    # ---- transcription ---------------------------------------------------------------------------------
    def listen_params(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                      options: dict[str, Any]) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("model", endpoint.upstream_model), ("smart_format", "true"),
                                         ("punctuate", "true"), ("utterances", "true")]
        language = options.get("language", req.language)
        if language is not None and not (isinstance(language, str) and language):
            raise InvalidRequest("provider.options.deepgram.language: expected a language code",
                                 param="provider.options.deepgram.language")
        params.append(("language", language) if language else ("detect_language", "true"))
        if req.extra.get("diarize"):
            params.append(("diarize", "true"))
        terms = req.extra.get("keyterms") or []
        name = "keyterm" if endpoint.upstream_model.startswith("nova-3") else "keywords"
        params += [(name, t) for t in terms if t.strip()]
        for k, v in options.items():
            if k in PASSTHROUGH:
                params += [(k, x) for x in _qv(v, k)]
            elif k != "language":
                raise InvalidRequest(f"provider.options.deepgram.{k}: not a supported option; use one of "
                                     f"language, {', '.join(sorted(PASSTHROUGH))}",
                                     param=f"provider.options.deepgram.{k}")
        if audio.format == "pcm":
            params += [("encoding", "linear16"), ("sample_rate", "16000"), ("channels", "1")]
        return params

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        if req.task != "transcribe":
            raise InvalidRequest(f"task: {endpoint.upstream_model} does not translate", param="task")
        params = self.listen_params(req, audio, endpoint, options)
        if audio.format == "pcm":
            data, ctype = audio.data, "application/octet-stream"
        elif audio.format in CONTENT_TYPES:
            data, ctype = audio.data, CONTENT_TYPES[audio.format]
        else:  # a container we could decode but cannot name: send FLAC made from the decoded samples
            from ..audio.encode import encode_all
            # in the thread: the samples themselves may be made lazily (decoded, or converted from int16)
            data, ctype = await asyncio.to_thread(lambda: encode_all(audio.samples, "flac", 16000)), "audio/flac"
        resp = await self.post_checked(self.url("listen"), params=params, content=data,
                                       headers={**self.auth, "Content-Type": ctype})
        try:
            body = resp.json()
            return self.parse(body, diarize=bool(req.extra.get("diarize")), fallback_language=req.language)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise self._malformed(f"{e.__class__.__name__}: {e}") from None

    @staticmethod
    def parse(body: dict[str, Any], *, diarize: bool, fallback_language: str | None = None) -> Transcript:
        results = body["results"]
        channel = results["channels"][0]
        alt = channel["alternatives"][0]

        def word(w: dict[str, Any]) -> Word:
            spk = w.get("speaker")
            conf = w.get("confidence")
            return Word(str(w.get("punctuated_word") or w["word"]), round(float(w["start"]), 3),
                        round(float(w["end"]), 3), float(conf) if conf is not None else None,
                        f"speaker_{spk}" if diarize and spk is not None else None)

        words = [word(w) for w in alt.get("words") or []]
        text = str(alt.get("transcript") or "").strip()
        segments: list[Segment] = []
        for u in results.get("utterances") or []:
            if u.get("channel", 0) != 0:
                continue
            uw = [word(w) for w in u.get("words") or []]
            spk = u.get("speaker")
            segments.append(Segment(len(segments), round(float(u["start"]), 3), round(float(u["end"]), 3),
                                    str(u.get("transcript") or " ".join(w.word for w in uw)).strip(), words=uw,
                                    speaker=f"speaker_{spk}" if diarize and spk is not None else None))
        if not segments and (text or words):
            start = words[0].start if words else 0.0
            end = words[-1].end if words else float(body.get("metadata", {}).get("duration") or 0.0)
            segments = [Segment(0, start, end, text or " ".join(w.word for w in words), words=words)]
        if not text:
            text = " ".join(s.text for s in segments)
        lang = languages.code(channel.get("detected_language") or fallback_language)
        return Transcript(text=text, language=lang, segments=segments)

    # ---- speech -----------------------------------------------------------------------------------------
    @staticmethod
    def voice_model(upstream_model: str, voice: str) -> str:
        v = voice.strip().lower()
        if v.startswith("aura"):
            return v
        return f"{upstream_model}-{v}" if "-" in v else f"{upstream_model}-{v}-en"

    async def _open(self, params: dict[str, str], text: str) -> Response:
        return await self.open_audio_stream(self.url("speak"), params=params, json={"text": text}, headers=self.auth)

    def max_input_characters(self, endpoint) -> int | None:
        return MAX_SPEAK_CHARACTERS

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        model = self.voice_model(endpoint.upstream_model, voice)
        native = NATIVE_SPEECH.get(req.response_format)
        if native and endpoint.output_formats and req.response_format not in endpoint.output_formats:
            native = None
        query, encoding, rate = native or PCM_SPEECH
        resp = await self._open({"model": model, **query}, req.input)

        async def chunks():
            total = 0
            async for b in self.drain(resp, require_audio=False):
                total += len(b)
                yield b
            if total == 0:
                raise self._malformed("empty audio")

        return SpeechStream(chunks(), encoding, rate)
