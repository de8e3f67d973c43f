"""Mistral (https://api.mistral.ai/v1), Voxtral.

Transcription: POST /audio/transcriptions, multipart with `file`, `model`, `language`, `temperature`,
`diarize`, repeated `context_bias` (vocabulary hints: our `keyterms`) and repeated `timestamp_granularities`
("segment" | "word"). Array fields are repeated under their plain name, without `[]`: that is what Mistral's
SDK sends (client-python, Speakeasy `serialize_multipart_form`, 2026). There is no `prompt` and no
`response_format`: the answer is always JSON {model, text, language, segments: [{text, start, end, type,
speaker_id?}], usage: {prompt_audio_seconds, prompt_tokens, completion_tokens, total_tokens}}. Mistral
documents that a `language` hint cannot be combined with timestamps, so timestamps are asked for only
without a hint (or when word timestamps are required, dropping the hint).

Word timestamps exist only on the Voxtral 2 model (`voxtral-mini-2602`, catalog capability
word_timestamps); Voxtral 3 (`voxtral-mini-transcribe-3-0`, which `voxtral-mini-latest` now names) answers
`word` with a 400 ("Migrate from Voxtral 2", docs.mistral.ai), so `word` is only sent where the endpoint
declares it. With word granularity each returned chunk is one word; a chunk with spaces in it is a segment,
and the answer is kept as segments then. No translation endpoint.

Speech: POST /audio/speech, JSON {model, input, voice_id, response_format, stream}. Without `stream` the
answer is {"audio_data": <base64>}; with `stream: true` it is Server-Sent Events `speech.audio.delta`
({"type", "audio_data"}) then `speech.audio.done` ({"type", "usage"}). We always stream raw `pcm`, which
Voxtral sends as 32-bit float little-endian mono at 24 kHz, and encode to the requested format as it
arrives (so every output format streams)."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from ..core import languages
from ..core.audio import SpeechStream
from ..core.types import Segment, SpeechRequest, Transcript, TranscriptionRequest, Word
from .http import Response
from .openai_compatible import OpenAICompatibleProvider, form_value, iter_sse_events, malformed, parse_segments

PCM_RATE = 24000


class MistralProvider(OpenAICompatibleProvider):
    key_required = True
    default_input_formats = None  # Mistral decodes the common containers itself
    reserved_options = frozenset({"file", "model", "file_url", "file_id", "stream", "response_format"})

    # ---- transcription ----------------------------------------------------------------------------
    def transcription_fields(self, req: TranscriptionRequest, endpoint, options: dict[str, Any]) -> dict[str, Any]:
        caps = endpoint.capabilities
        fields: dict[str, Any] = {"model": endpoint.upstream_model}
        words = req.want_words and caps.word_timestamps
        diarize = bool(req.extra.get("diarize"))
        # speaker turns need timestamps, and Mistral takes no language hint with them: diarization drops the hint
        if req.language and caps.language and not words and not diarize:
            fields["language"] = req.language
        else:
            fields["timestamp_granularities"] = ["word" if words else "segment"]
        if req.temperature is not None and caps.temperature:
            fields["temperature"] = form_value(req.temperature)
        if diarize:
            fields["diarize"] = "true"
        if req.extra.get("keyterms"):
            # Mistral wants each bias term without spaces or commas; multi-word phrases use underscores.
            fields["context_bias"] = ["_".join(t.replace(",", " ").split()) for t in req.extra["keyterms"]]
        for k, v in self.options_for(options).items():
            fields[k] = form_value(v)
        return fields

    def parse_transcription(self, resp: Response, req: TranscriptionRequest, endpoint) -> Transcript:
        body = self.json_body(resp)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise malformed(self.slug, "no text field")
        chunks = parse_segments(body.get("segments"), self.slug)
        text = body["text"].strip()
        asked_words = req.want_words and endpoint.capabilities.word_timestamps
        # one chunk per word only when words were asked for and each chunk is one word: segments stay segments
        if asked_words and chunks and all(len(c.text.split()) <= 1 for c in chunks):
            words = [Word(c.text.strip(), c.start, c.end, None, c.speaker) for c in chunks if c.text.strip()]
            segments = [Segment(id=0, start=chunks[0].start, end=chunks[-1].end, text=text, words=words)]
        else:
            segments = chunks
        usage = u if isinstance(u := body.get("usage"), dict) else {}
        seconds = usage.get("prompt_audio_seconds")
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return Transcript(text=text, language=languages.code(body.get("language")),
                          duration=float(seconds) if isinstance(seconds, (int, float)) and seconds else None,
                          segments=segments, task="transcribe",
                          input_tokens=tin if isinstance(tin, int) and tin else None,
                          output_tokens=tout if isinstance(tout, int) and tout else None)

    # ---- speech -----------------------------------------------------------------------------------
    def speech_body(self, req: SpeechRequest, endpoint, voice: str, fmt: str,
                    options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": endpoint.upstream_model, "input": req.input, "voice_id": voice,
                                "response_format": "pcm", "stream": True}
        body.update(self.options_for(options))
        return body

    async def _events(self, resp: Response) -> AsyncIterator[dict[str, Any]]:
        """Server-Sent Events -> JSON payloads (the `event:` name is repeated in the payload's `type`)."""
        async for event, raw in iter_sse_events(resp.aiter_lines(), unended_last=False):
            if raw.strip() == "[DONE]":
                return
            try:
                payload = json.loads(raw)
            except ValueError:
                raise malformed(self.slug, f"event data is not JSON: {raw[:60]!r}") from None
            if not isinstance(payload, dict):
                raise malformed(self.slug, "event data is not an object")
            payload.setdefault("type", event)
            yield payload

    async def _pcm_chunks(self, resp: Response, state: dict) -> AsyncIterator[np.ndarray]:
        carry = b""
        got = False
        try:
            async for ev in self._events(resp):
                kind = ev.get("type")
                if kind == "speech.audio.delta":
                    try:
                        raw = carry + base64.b64decode(ev.get("audio_data") or "", validate=True)
                    except (binascii.Error, ValueError, TypeError):
                        raise malformed(self.slug, "audio_data is not base64") from None
                    cut = len(raw) - len(raw) % 4
                    carry = raw[cut:]
                    if cut:
                        got = True
                        yield np.frombuffer(raw[:cut], dtype="<f4").astype(np.float32)
                elif kind == "speech.audio.done":
                    usage = ev.get("usage") if isinstance(ev.get("usage"), dict) else {}
                    state["usage"] = usage
                    break
                elif kind == "error" or "error" in ev:
                    err = ev.get("error") if isinstance(ev.get("error"), (dict, str)) else ev
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise malformed(self.slug, f"error event: {self.scrub(str(msg), 200)}")
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        finally:
            await resp.aclose()
        if not got:
            raise malformed(self.slug, "the stream carried no audio")

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        resp = await self.open_stream(self.speech_path, json=self.speech_body(req, endpoint, voice, "pcm", options),
                                      headers={"Accept": "text/event-stream"})
        ctype = resp.headers.get("content-type", "").lower()
        if ctype.startswith("application/json"):
            # A non-streamed answer: {"audio_data": base64 of the whole file}.
            try:
                body = json.loads(await resp.aread())
                pcm = base64.b64decode(body["audio_data"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise malformed(self.slug, "no audio_data in the JSON answer") from None
            except httpx.HTTPError as e:
                raise self.transport_error(e) from None
            finally:
                await resp.aclose()
            samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 4], dtype="<f4").astype(np.float32)

            async def one() -> AsyncIterator[np.ndarray]:
                yield samples
            return SpeechStream(one(), "f32", PCM_RATE)
        if not ctype.startswith("text/event-stream"):
            await resp.aclose()
            raise malformed(self.slug, f"expected an event stream, got {ctype or 'no content type'}")
        return SpeechStream(self._pcm_chunks(resp, {}), "f32", PCM_RATE)
