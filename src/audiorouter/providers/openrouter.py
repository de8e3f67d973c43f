"""OpenRouter itself as an upstream (https://openrouter.ai/api/v1).

Transcription: POST /audio/transcriptions with a JSON body, not multipart: {model, input_audio: {data:
<base64 of the raw bytes, no data: URI>, format}, language, temperature, response_format ("json" |
"verbose_json"), timestamp_granularities, diarize, keyterms, provider}. The answer is {text, usage: {seconds |
input_tokens/output_tokens/total_tokens, cost}} plus, with verbose_json, {task, language, duration,
segments, words}. Accepted containers: wav, mp3, flac, m4a, ogg, webm, aac.

Speech: POST /audio/speech, JSON {model, input, voice, response_format ("mp3" | "pcm"), speed,
instructions, provider}; the answer is the raw audio stream (PCM: 16-bit mono, 24 kHz unless the content
type names another rate). Errors: {"error": {"code", "message", "metadata"}}.

`provider.options.openrouter` is merged into the upstream body, so e.g. {"provider": {"order": [...]}} steers
OpenRouter's own routing."""
from __future__ import annotations

import base64
from typing import Any

from ..core.errors import InvalidRequest
from ..core.types import Transcript, TranscriptionRequest
from .base import PreparedAudio
from .openai_compatible import OpenAICompatibleProvider, parse_openai_transcript

INPUT_FORMATS = ("wav", "mp3", "flac", "m4a", "ogg", "webm", "aac")


class OpenRouterProvider(OpenAICompatibleProvider):
    key_required = True
    default_input_formats = INPUT_FORMATS
    upstream_formats = ("json", "verbose_json")
    reserved_options = frozenset({"model", "input_audio", "response_format"})

    def headers(self) -> dict[str, str]:
        h = super().headers()
        # OpenRouter's optional attribution headers, from the catalog's provider options.
        for opt, header in (("referer", "HTTP-Referer"), ("title", "X-Title")):
            if self.spec.options.get(opt):
                h[header] = str(self.spec.options[opt])
        return h

    def transcription_body(self, req: TranscriptionRequest, endpoint, data: bytes, fmt: str,
                           options: dict[str, Any]) -> dict[str, Any]:
        caps = endpoint.capabilities
        body: dict[str, Any] = {"model": endpoint.upstream_model,
                                "input_audio": {"data": base64.b64encode(data).decode("ascii"), "format": fmt}}
        if req.language and caps.language:
            body["language"] = req.language
        if req.temperature is not None and caps.temperature:
            body["temperature"] = req.temperature
        if self.response_format_for(endpoint) == "verbose_json":
            body["response_format"] = "verbose_json"
            body["timestamp_granularities"] = ["segment", "word"] if req.want_words and caps.word_timestamps else ["segment"]
        if req.extra.get("diarize"):
            body["diarize"] = True
        if req.extra.get("keyterms"):
            body["keyterms"] = list(req.extra["keyterms"])
        body.update(self.options_for(options))
        return body

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        if req.task == "translate":
            # OpenRouter has no translation route; the catalog marks its endpoints translation: false.
            raise InvalidRequest(f"{self.slug}: translation is not offered by this upstream", param="model")
        up = await self.upload(audio, endpoint)
        body = self.transcription_body(req, endpoint, up.data, up.format, options)
        resp = await self.post(self.transcription_path, json=body)
        return parse_openai_transcript(self.json_body(resp), req.task, self.slug)
