"""Candidate selection and execution: model id -> endpoints that can honour the request -> attempts in
order, with fallback to the next candidate on a retryable failure. Records every attempt."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..core.errors import GatewayError, InvalidRequest, NotFound, Overloaded, UpstreamError
from ..core.types import Attempt, SpeechRequest, Transcript, TranscriptionRequest, Usage
from ..providers.base import PreparedAudio, ProviderAdapter, SpeechStream
from .catalog import Catalog, Endpoint, Kind, Model
from .pricing import estimate_text_tokens, speech_cost, transcription_cost

LOCAL_STT = Endpoint(provider="local", upstream_model="whisper-base", substitute=True,
                     capabilities={"translation": True, "word_timestamps": True, "prompt": True})
LOCAL_TTS = Endpoint(provider="local", upstream_model="hibari", substitute=True,
                     capabilities={"speed": True, "streaming": True})


@dataclass
class Candidate:
    model: Model
    endpoint: Endpoint
    adapter: ProviderAdapter


@dataclass
class Route:
    """What served (or tried to serve) a request."""
    model: str
    provider: str | None = None
    endpoint: str | None = None
    substitute: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    ignored_params: list[str] = field(default_factory=list)


@dataclass
class TranscriptionResult:
    transcript: Transcript
    usage: Usage
    route: Route


@dataclass
class SpeechResult:
    stream: SpeechStream
    first: Any
    usage: Usage
    route: Route

    async def chunks(self) -> AsyncIterator[Any]:
        yield self.first
        async for c in self.stream.chunks:
            yield c


def _requirements(req: TranscriptionRequest | SpeechRequest) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(hard, soft) requirements as (request parameter, endpoint capability). Hard ones always exclude an
    endpoint that lacks them; soft ones only with provider.require_parameters, else they are reported
    as ignored (X-Ignored-Parameters) where the serving endpoint cannot use them."""
    hard: list[tuple[str, str]] = []
    soft: list[tuple[str, str]] = []
    if isinstance(req, TranscriptionRequest):
        if req.task == "translate":
            hard.append(("task", "translation"))
        if req.want_words and req.response_format == "verbose_json":
            hard.append(("timestamp_granularities", "word_timestamps"))
        if req.extra.get("diarize"):
            hard.append(("diarize", "diarization"))
        if req.extra.get("keyterms"):
            hard.append(("keyterms", "keyterms"))
        if req.prompt:
            soft.append(("prompt", "prompt"))
        if req.temperature is not None:
            soft.append(("temperature", "temperature"))
        if req.language:
            soft.append(("language", "language"))
    else:
        if req.speed != 1.0:
            hard.append(("speed", "speed"))
        if req.instructions:
            soft.append(("instructions", "instructions"))
    return hard, soft


class Router:
    def __init__(self, catalog: Catalog, adapters: dict[str, ProviderAdapter], settings: Any):
        self.catalog = catalog
        self.adapters = adapters
        self.settings = settings

    # ---- model and endpoint selection -------------------------------------------------------------
    def resolve(self, model_id: str, kind: Kind, *, field_name: str = "model") -> Model:
        m = self.catalog.find(model_id)
        if m is None:
            raise NotFound(f"{field_name}: model {model_id!r} does not exist", param=field_name,
                           metadata={"model": model_id, "suggestions": self.catalog.suggestions(model_id, kind)},
                           code="model_not_found")
        if m.kind != kind:
            raise InvalidRequest(f"{field_name}: {m.id} is a {m.kind} model, not a {kind} model", param=field_name,
                                 metadata={"model": m.id, "suggestions": self.catalog.suggestions(model_id, kind)})
        return m

    def usable(self, endpoint: Endpoint) -> bool:
        a = self.adapters.get(endpoint.provider)
        return a is not None and a.available()

    def _endpoints(self, model: Model) -> list[Endpoint]:
        eps = list(model.endpoints)
        if self.settings.local_substitute and model.author != "local" and "local" in self.adapters:
            eps.append(LOCAL_STT if model.kind == "transcription" else LOCAL_TTS)
        return eps

    def candidates(self, model: Model, req: TranscriptionRequest | SpeechRequest) -> tuple[list[Candidate], list[str]]:
        prefs = req.provider
        hard, soft = _requirements(req)
        if prefs.require_parameters:
            hard, soft = hard + soft, []
        eps = [e for e in self._endpoints(model) if self.usable(e)]
        if prefs.only:
            eps = [e for e in eps if e.provider in prefs.only]
        if prefs.ignore:
            eps = [e for e in eps if e.provider not in prefs.ignore]
        if prefs.data_collection == "deny":
            eps = [e for e in eps if e.data_collection == "deny"]
        if prefs.zdr:
            eps = [e for e in eps if e.zdr or e.provider == "local"]
        for param, cap in hard:
            able = [e for e in eps if getattr(e.capabilities, cap)]
            if not able and eps:
                raise InvalidRequest(f"{param}: no provider of {model.id} supports {param}", param=param,
                                     metadata={"model": model.id, "parameter": param}, code="unsupported_parameter")
            eps = able
        if prefs.order:
            rank = {p: i for i, p in enumerate(prefs.order)}
            eps.sort(key=lambda e: rank.get(e.provider, len(rank)))
        ignored = sorted({p for p, cap in soft if eps and not getattr(eps[0].capabilities, cap)})
        return [Candidate(model, e, self.adapters[e.provider]) for e in eps], ignored

    def _plan(self, req: TranscriptionRequest | SpeechRequest, kind: Kind) -> tuple[list[Candidate], Route]:
        ids = [req.model] + [m for m in (req.models or []) if m != req.model]
        cands: list[Candidate] = []
        ignored: list[str] = []
        first_model: Model | None = None
        for i, mid in enumerate(ids):
            model = self.resolve(mid, kind, field_name="model" if i == 0 else f"models[{i - 1}]")
            first_model = first_model or model
            c, ign = self.candidates(model, req)
            if not cands:
                ignored = ign
            cands.extend(c)
        assert first_model is not None
        if not cands:
            raise GatewayError(f"model: no provider for {first_model.id} is configured (set its API key or enable "
                               "the local engine)", status=503, param="model",
                               metadata={"model": first_model.id}, code="no_available_provider")
        if not req.provider.allow_fallbacks:
            cands = cands[:1]
        return cands, Route(model=first_model.id, ignored_params=ignored)

    # ---- execution ------------------------------------------------------------------------------
    async def _attempt(self, route: Route, cand: Candidate, call):
        t0 = time.perf_counter()
        try:
            out = await call()
        except GatewayError as e:
            status = getattr(e, "upstream_status", None) or e.status
            route.attempts.append(Attempt(cand.endpoint.provider, cand.endpoint.key, status,
                                          (time.perf_counter() - t0) * 1000, e.message))
            raise
        route.attempts.append(Attempt(cand.endpoint.provider, cand.endpoint.key, 200, (time.perf_counter() - t0) * 1000))
        route.provider, route.endpoint = cand.endpoint.provider, cand.endpoint.key
        route.substitute = cand.endpoint.substitute
        if route.substitute or cand.model.id != route.model:
            route.model = cand.model.id
        return out

    @staticmethod
    def _retryable(e: GatewayError) -> bool:
        return isinstance(e, Overloaded) or (isinstance(e, UpstreamError) and e.retryable)

    def _exhausted(self, route: Route, last: GatewayError) -> GatewayError:
        if len(route.attempts) == 1:
            last.metadata.setdefault("provider_name", route.attempts[0].provider)
            return last
        status = 504 if all(a.status == 504 for a in route.attempts) else (503 if all(a.status == 503 for a in route.attempts) else 502)
        return GatewayError(f"all {len(route.attempts)} providers failed; last: {last.message}", status=status,
                            metadata={"attempts": [a.__dict__ for a in route.attempts]}, code="all_providers_failed",
                            headers=last.headers)

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, progress=None) -> TranscriptionResult:
        cands, route = self._plan(req, "transcription")
        last: GatewayError | None = None
        for cand in cands:
            options = dict(req.provider.options.get(cand.endpoint.provider, {}))
            kwargs = {"progress": progress} if progress is not None and cand.endpoint.provider == "local" else {}
            try:
                transcript = await self._attempt(route, cand, lambda: cand.adapter.transcribe(
                    req, audio, cand.endpoint, options, **kwargs))
            except GatewayError as e:
                last = e
                if self._retryable(e):
                    continue
                raise
            usage = Usage(seconds=audio.duration, input_tokens=transcript.input_tokens,
                          output_tokens=transcript.output_tokens)
            usage.cost = transcription_cost(cand.endpoint.pricing, usage)
            if transcript.duration is None:
                transcript.duration = audio.duration
            return TranscriptionResult(transcript, usage, route)
        assert last is not None
        raise self._exhausted(route, last)

    def voice_for(self, model: Model, endpoint: Endpoint, voice: str | None) -> str:
        """Validate the requested voice against the model, then map it to the serving endpoint's voice."""
        local_voices = getattr(self.adapters.get("local"), "voices", ["heart"])
        accepted = {v.lower(): v for v in [*model.voices, *endpoint.voice_map]}
        name = voice or model.default_voice or (model.voices[0] if model.voices else None)
        if name is None:
            name = local_voices[0]
        if name.lower() not in accepted and model.voices:
            raise InvalidRequest(f"voice: {name!r} is not a voice of {model.id}; choose one of {model.voices}",
                                 param="voice", metadata={"voices": model.voices, "model": model.id})
        name = accepted.get(name.lower(), name)
        if endpoint.substitute:
            return local_voices[0]
        return endpoint.voice_map.get(name, name)

    async def speak(self, req: SpeechRequest) -> SpeechResult:
        cands, route = self._plan(req, "speech")
        last: GatewayError | None = None
        for cand in cands:
            options = dict(req.provider.options.get(cand.endpoint.provider, {}))
            voice = self.voice_for(cand.model, cand.endpoint, req.voice)

            async def start():
                stream = await cand.adapter.synthesize(req, cand.endpoint, voice, options)
                try:
                    first = await anext(stream.chunks)
                except StopAsyncIteration:
                    first = b"" if stream.encoding != "f32" else None
                return stream, first

            try:
                stream, first = await self._attempt(route, cand, start)
            except GatewayError as e:
                last = e
                if self._retryable(e):
                    continue
                raise
            usage = Usage(characters=len(req.input))
            p = cand.endpoint.pricing
            if p.per_million_input_tokens is not None:
                usage.input_tokens = stream.input_tokens or estimate_text_tokens(req.input)
            if p.per_million_output_tokens is not None:
                usage.output_tokens = stream.output_tokens
            usage.cost = speech_cost(p, usage)
            return SpeechResult(stream, first, usage, route)
        assert last is not None
        raise self._exhausted(route, last)
