"""OpenRouter itself as an upstream (https://openrouter.ai/api/v1).

Wire shapes as the openrouter Python SDK 1.3.84 types them (components.STTRequest, SpeechRequest,
STTRequestProvider; read 2026-12-07).

Transcription: POST /audio/transcriptions with a JSON body, not multipart: {model, input_audio: {data:
<base64 of the raw bytes, no data: URI>, format}, language, temperature, response_format ("json" |
"verbose_json"), timestamp_granularities, diarize, keyterms, provider: {data_collection, zdr, options}}.
`diarize` and `keyterms` are top-level fields of STTRequest (a model that cannot use them answers 400);
diarization needs response_format verbose_json (a json request with diarize is a 400, and the speaker labels
come on the words). verbose_json is "only supported by OpenAI-compatible providers", so it is requested only
where the catalog endpoint says verbose_json (not for e.g. google/chirp-3). The answer is {text, usage:
{seconds | input_tokens/output_tokens/total_tokens, cost}} plus, with verbose_json, {task, language,
duration, segments, words}. Accepted containers: wav, mp3, flac, m4a, ogg, webm, aac.

Speech: POST /audio/speech, JSON {model, input, voice, response_format ("mp3" | "pcm"), speed,
instructions, provider}; the answer is the raw audio stream (PCM: 16-bit mono, 24 kHz unless the content
type names another rate). Errors: {"error": {"code", "message", "metadata"}}.

`provider.options.openrouter` is merged into the upstream body. Its `provider` object may carry only what
OpenRouter's audio endpoints take there (data_collection, zdr, options: per-provider passthrough); audio
requests are load-balanced by OpenRouter itself and do not take order/only/ignore/sort (OpenRouter's
"Transcription on OpenRouter" post: the chat routing controls are not applied on this endpoint), so those
are a 400 here rather than silently dropped upstream."""
from __future__ import annotations

import base64
from typing import Any

from ..core.audio import PreparedAudio
from ..core.errors import InvalidRequest
from ..core.types import Transcript, TranscriptionRequest
from .openai_compatible import OpenAICompatibleProvider, parse_openai_transcript

INPUT_FORMATS = ("wav", "mp3", "flac", "m4a", "ogg", "webm", "aac")
UPSTREAM_PROVIDER_KEYS = frozenset({"data_collection", "zdr", "options"})  # STTRequestProvider / SpeechRequestProvider


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
        diarize = bool(req.extra.get("diarize")) and caps.diarization
        if diarize or self.response_format_for(endpoint) == "verbose_json":
            body["response_format"] = "verbose_json"
            words = req.want_words and caps.word_timestamps
            body["timestamp_granularities"] = ["segment", "word"] if words else ["segment"]
        if diarize:
            body["diarize"] = True
        if req.extra.get("keyterms") and caps.keyterms:
            body["keyterms"] = list(req.extra["keyterms"])
        body.update(self.options_for(options))
        return body

    def speech_body(self, req, endpoint, voice: str, fmt: str, options: dict[str, Any]) -> dict[str, Any]:
        body = super().speech_body(req, endpoint, voice, fmt, options)
        body["voice"] = voice  # SpeechRequest.voice is a string: a custom voice goes by its id
        return body

    def options_for(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().options_for(options)
        prov = options.get("provider")
        if prov is not None:
            name = f"provider.options.{self.slug}.provider"
            if not isinstance(prov, dict):
                raise InvalidRequest(f"{name}: expected an object", param=name)
            for k in prov:
                if k not in UPSTREAM_PROVIDER_KEYS:
                    raise InvalidRequest(f"{name}.{k}: OpenRouter's audio endpoints take only "
                                         f"{', '.join(sorted(UPSTREAM_PROVIDER_KEYS))} here", param=f"{name}.{k}")
        return options

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        if req.task == "translate":
            # OpenRouter has no translation route; the catalog marks its endpoints translation: false.
            raise InvalidRequest(f"{self.slug}: translation is not offered by this upstream", param="model")
        up = await self.upload(audio, endpoint)
        body = self.transcription_body(req, endpoint, up.data, up.format, options)
        resp = await self.post(self.transcription_path, json=body)
        return parse_openai_transcript(self.json_body(resp), req.task, self.slug)
