"""Candidate selection and execution for audio requests.

Selection (per model, then the `models` fallbacks in order): the model's catalog endpoints (plus the local
engine as a last-resort substitute) filtered by
  parameters no endpoint of the model can honour at all          -> 400 naming the parameter and the model
  configured (the provider has its key)                          -> 503 when none is
  provider.only / provider.ignore / provider.data_collection ("deny" keeps endpoints that do not collect
  data) / provider.zdr (zero data retention, or local)           -> 400 naming the field when none is left
  required parameters (task=translate, word timestamps, diarize, keyterms, speed; every parameter with
  provider.require_parameters)                                   -> 400 naming the parameter and the model
  limits (audio seconds, input characters)                        -> 413 / 400
  provider.max_price                                              -> 400 naming provider.max_price
then ordered: provider.order first (in that order), then provider.sort ("price": the estimated cost of
this request; "latency" / "throughput": measured history, see health.py; unmeasured endpoints last),
else catalog order; substitutes always last. allow_fallbacks=false keeps only the first candidate of each
model (or, with provider.order, only the listed providers).

provider.max_price (USD, the same units as the `pricing` object of /api/v1/models):
  audio       per second of input audio (duration-priced transcription)
  prompt      per input token, or per input character for character-priced speech
  completion  per output token
  request     per request
  total       the whole request, estimated before sending from the audio duration or text length
An endpoint is kept when each price it has in a named unit is at most the maximum.

Execution: candidates in order; on each, up to `retry_attempts` attempts. Retried on the same endpoint
(exponential backoff with jitter, or the upstream's Retry-After when it is at most `retry_after_max_s`; a
longer Retry-After moves on at once): 429, 5xx, timeouts (per-attempt `timeout_s` of the provider, else
`upstream_timeout_s`), connection errors and malformed replies. Moved on without retrying: 401/402/403/404
(our key or the upstream model), 413, a busy local engine. Never retried or moved on: the request's own
errors (400). Nothing is retried once speech bytes have reached the client (the first chunk is pulled
before committing). An overall `request_deadline_s` bounds all attempts. A per-endpoint circuit breaker
(health.py) skips an endpoint after `breaker_threshold` consecutive failures and lets one probe through
after `breaker_cooldown_s`. Only the endpoint's own failures count: not a refused credential (401/402/403:
the gateway's key or a caller's BYOK key, tried and moved on from on every request), nor a 429 answered to
a caller's own BYOK key.

Every attempt is recorded in Route.attempts (provider, endpoint, status, latency, error) - the interface
the ledger reads - and the response names the serving provider (X-Provider) and the attempts
(X-Route-Attempts); when everything fails the error carries them in metadata.attempts."""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from ..core.types import Attempt, SpeechRequest, Transcript, TranscriptionRequest, Usage
from ..providers.base import BYOK_KEYS, ProviderAdapter
from .catalog import Capabilities, Catalog, Endpoint, Kind, Model
from .health import HealthBook
from .pricing import estimate_cost, estimate_text_tokens, speech_cost, transcription_cost

log = logging.getLogger("audiorouter.router")

LOCAL_STT = Endpoint(provider="local", upstream_model="whisper-base", substitute=True,
                     capabilities=Capabilities(translation=True, word_timestamps=True, prompt=True, logprobs=True,
                                               chunking_strategy=True))
LOCAL_TTS = Endpoint(provider="local", upstream_model="hibari", substitute=True,
                     capabilities=Capabilities(speed=True, streaming=True))

MAX_PRICE_KEYS = ("audio", "prompt", "completion", "request", "total")


@dataclass
class Candidate:
    model: Model
    endpoint: Endpoint
    adapter: ProviderAdapter

    @property
    def key(self) -> str:
        return self.endpoint.key

    @property
    def tracked(self) -> bool:
        """Remote endpoints have a circuit breaker and a timeout; the local engine has neither (its own
        bounded queue answers 503 when full)."""
        return self.endpoint.provider != "local"


@dataclass
class Route:
    """What served (or tried to serve) a request."""
    model: str
    provider: str | None = None
    endpoint: str | None = None
    substitute: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    ignored_params: list[str] = field(default_factory=list)
    cache_hit: bool = False  # served from the transcript cache (billed at 0)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # endpoints passed over (e.g. circuit open)

    def attempts_header(self) -> str:
        """Compact attempt log for a response header: provider:status:latency_ms, comma-separated."""
        return ",".join(f"{a.provider}:{a.status}:{round(a.latency_ms)}" for a in self.attempts)

    def attempts_metadata(self) -> list[dict[str, Any]]:
        return [{**asdict(a), "latency_ms": round(a.latency_ms, 1)} for a in self.attempts]


class Plan(NamedTuple):
    """What Router.plan chose for one request: the candidates in the order they are tried and the Route
    template (model, ignored parameters, endpoints skipped at planning). Computed once per request and passed
    down (Router.transcribe / Router.speak take it), never re-planned per chunk or per piece. Unpacks as
    `cands, route`."""
    cands: list[Candidate]
    route: Route

    def new_route(self) -> Route:
        """A fresh Route to record one execution's attempts in."""
        r = self.route
        return Route(model=r.model, ignored_params=list(r.ignored_params), skipped=[dict(x) for x in r.skipped])

    def only(self, cands: list[Candidate]) -> Plan:
        """The same plan restricted to `cands` (e.g. the one candidate that streams, or the rest)."""
        return Plan(cands, self.route)


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
    on_end: Callable[[BaseException | None], None] | None = None

    async def chunks(self) -> AsyncIterator[Any]:
        """The audio: the chunk pulled before committing, then the rest. Reports the stream's end (or its
        upstream failure) to the router's health book; a client disconnect reports nothing."""
        try:
            yield self.first
            async for c in self.stream.chunks:
                yield c
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as e:
            if self.on_end:
                self.on_end(e)
            raise
        if self.on_end:
            self.on_end(None)


@dataclass
class _Selection:
    cands: list[Candidate] = field(default_factory=list)
    error: GatewayError | None = None


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
        if req.extra.get("diarize"):  # (response_format diarized_json sets it: the error names the format)
            hard.append(("response_format" if req.response_format == "diarized_json" else "diarize", "diarization"))
        if req.extra.get("keyterms"):
            hard.append(("keyterms", "keyterms"))
        if req.prompt:
            soft.append(("prompt", "prompt"))
        if req.temperature is not None:
            soft.append(("temperature", "temperature"))
        if req.language:
            soft.append(("language", "language"))
        if "logprobs" in (req.extra.get("include") or ()):
            soft.append(("include", "logprobs"))
        if req.extra.get("chunking_strategy") is not None:
            soft.append(("chunking_strategy", "chunking_strategy"))
        if req.extra.get("known_speaker_names"):
            hard.append(("known_speaker_names", "known_speakers"))
    else:
        if req.speed != 1.0:
            hard.append(("speed", "speed"))
        if req.voice_object:
            hard.append(("voice", "custom_voices"))
        if req.turns:  # input as turns in several voices (api/openai_params.speech_turns)
            hard.append(("input", "multi_speaker"))
        if req.instructions:
            soft.append(("instructions", "instructions"))
    return hard, soft


def unit_prices(e: Endpoint) -> dict[str, float]:
    """The endpoint's prices in max_price units (see the module docstring)."""
    p = e.pricing
    prompt = (p.per_million_characters / 1e6 if p.per_million_characters is not None
              else (p.per_million_input_tokens or 0.0) / 1e6)
    return {"audio": p.per_second or 0.0, "prompt": prompt,
            "completion": (p.per_million_output_tokens or 0.0) / 1e6, "request": p.per_request}



Step = tuple[str, Callable[[Endpoint], bool]]


def preference_steps(usable: Callable[[Endpoint], bool], prefs: Any) -> list[Step]:
    """The endpoint filters every kind of request shares, in the order their failures are reported: configured,
    provider.only / ignore / data_collection / zdr (OpenRouter's provider preferences)."""
    only = {p.lower() for p in prefs.only or []}
    ignore = {p.lower() for p in prefs.ignore or []}
    steps: list[Step] = [("configured", usable)]
    if only:
        steps.append(("provider.only", lambda e: e.provider.lower() in only))
    if ignore:
        steps.append(("provider.ignore", lambda e: e.provider.lower() not in ignore))
    if prefs.data_collection == "deny":
        steps.append(("provider.data_collection", lambda e: e.data_collection == "deny"))
    if prefs.zdr:
        steps.append(("provider.zdr", lambda e: e.zdr or e.provider == "local"))
    return steps


def max_price_check(max_price: dict[str, float], total: Callable[[Endpoint], float]) -> Callable[[Endpoint], bool]:
    """provider.max_price: every listed unit price within its limit; "total" is the request's estimated cost."""
    def within(e: Endpoint) -> bool:
        prices = unit_prices(e)
        for k, limit in max_price.items():
            if k == "total":
                if total(e) > limit + 1e-12:
                    return False
            elif prices.get(k, 0.0) > limit + 1e-15:
                return False
        return True
    return within


Requirement = tuple[str, str]  # (request parameter, endpoint capability)


def required_parameters(hard: list[Requirement], soft: list[Requirement], prefs: Any) -> list[Requirement]:
    """What an endpoint must support to serve a request: its hard requirements, and with
    provider.require_parameters its soft ones too (without it, an endpoint lacking a soft one drops it and the
    answer reports it in X-Ignored-Parameters). Shared by audio and chat selection."""
    return [*hard, *soft] if prefs.require_parameters else list(hard)


def unsupported_parameter(model: Model, all_eps: list[Endpoint], required: list[Requirement]) -> InvalidRequest | None:
    """The 400 naming the first required parameter that no endpoint of the model supports at all."""
    for param, cap in required:
        if not any(getattr(e.capabilities, cap) for e in all_eps):
            diarized = cap == "diarization" and param == "response_format"
            what = ("diarized_json (speaker diarization)" if diarized
                    else "input as turns in several voices (multi-speaker speech)" if cap == "multi_speaker"
                    else param)
            return InvalidRequest(f"{param}: no provider of {model.id} supports {what}", param=param,
                                  metadata={"model": model.id, "parameter": param}, code="unsupported_parameter")
    return None


def _capable(cap: str, e: Endpoint) -> bool:
    return bool(getattr(e.capabilities, cap))


def capability_steps(required: list[Requirement]) -> list[Step]:
    """One selection step per required parameter: keep the endpoints that support it (see capability_error)."""
    return [(f"param:{param}:{cap}", functools.partial(_capable, cap)) for param, cap in required]


def capability_error(step: str, model: Model, all_eps: list[Endpoint], meta: dict[str, Any]) -> InvalidRequest | None:
    """The 400 for a capability step that left no endpoint (None for any other step): it names the parameter and
    the providers that would support it."""
    if not step.startswith("param:"):
        return None
    _, param, cap = step.split(":", 2)
    able = sorted({e.provider for e in all_eps if getattr(e.capabilities, cap)})
    return InvalidRequest(f"{param}: no available provider of {model.id} supports {param}"
                          + (f" (it is supported by {', '.join(able)}, which is not configured or was "
                             "excluded)" if able else ""),
                          param=param, metadata={**meta, "parameter": param}, code="unsupported_parameter")


class Router:
    def __init__(self, catalog: Catalog, adapters: dict[str, ProviderAdapter], settings: Any):
        self.catalog = catalog
        self.adapters = adapters
        self.settings = settings
        self.health = HealthBook(threshold=getattr(settings, "breaker_threshold", 5),
                                 cooldown_s=getattr(settings, "breaker_cooldown_s", 30.0))

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

    def endpoints(self, model: Model) -> list[Endpoint]:
        """The model's catalog endpoints, plus the local engine as a last-resort substitute where it stands in."""
        eps = list(model.endpoints)
        if self.settings.local_substitute and model.author != "local" and "local" in self.adapters:
            eps.append(LOCAL_STT if model.kind == "transcription" else LOCAL_TTS)
        return eps

    @staticmethod
    def _check_max_price(mp: dict[str, float] | None) -> None:
        for k, v in (mp or {}).items():
            if k not in MAX_PRICE_KEYS:
                units = ", ".join(MAX_PRICE_KEYS)
                raise InvalidRequest(f"provider.max_price.{k}: unknown price unit; use one of {units}",
                                     param=f"provider.max_price.{k}")
            if v < 0:
                raise InvalidRequest(f"provider.max_price.{k}: must not be negative", param=f"provider.max_price.{k}")

    def _select(self, model: Model, req: TranscriptionRequest | SpeechRequest, duration: float | None,
                lengths: bool = True) -> _Selection:
        prefs = req.provider
        hard = required_parameters(*_requirements(req), prefs)
        all_eps = self.endpoints(model)
        unsupported = unsupported_parameter(model, all_eps, hard)
        if unsupported is not None:
            return _Selection(error=unsupported)

        chars = len(req.input) if lengths and isinstance(req, SpeechRequest) else None
        mp = prefs.max_price or {}

        within_price = max_price_check(mp, lambda e: estimate_cost(e.pricing, req, duration))

        def within_limits(e: Endpoint) -> bool:
            lim = e.limits
            if duration is not None and lim.max_seconds is not None and duration > lim.max_seconds:
                return False
            return not (chars is not None and lim.max_characters is not None and chars > lim.max_characters)

        steps = preference_steps(self.usable, prefs) + capability_steps(hard)
        steps.append(("limits", within_limits))
        if mp:
            steps.append(("provider.max_price", within_price))

        eps = all_eps
        for name, keep in steps:
            kept = [e for e in eps if keep(e)]
            if not kept:
                return _Selection(error=self._selection_error(name, model, eps, all_eps, req, duration))
            eps = kept

        order = [p.lower() for p in prefs.order or []]
        rank = {p: i for i, p in enumerate(order)}
        index = {id(e): i for i, e in enumerate(eps)}

        def metric(e: Endpoint) -> float:
            if prefs.sort == "price":
                return estimate_cost(e.pricing, req, duration)
            if prefs.sort == "latency":
                v = self.health.latency(e.key)
                return v if v is not None else float("inf")
            if prefs.sort == "throughput":
                v = self.health.throughput(e.key)
                return -v if v is not None else float("inf")
            return 0.0

        eps = sorted(eps, key=lambda e: (e.substitute, rank.get(e.provider.lower(), len(rank)), metric(e),
                                         index[id(e)]))
        if not prefs.allow_fallbacks:
            listed = [e for e in eps if e.provider.lower() in rank]
            eps = listed if listed else eps[:1]
        return _Selection(cands=[Candidate(model, e, self.adapters[e.provider]) for e in eps])

    def _selection_error(self, step: str, model: Model, before: list[Endpoint], all_eps: list[Endpoint],
                         req: TranscriptionRequest | SpeechRequest, duration: float | None) -> GatewayError:
        names = sorted({e.provider for e in before})
        meta: dict[str, Any] = {"model": model.id, "providers": names}
        if step == "configured":
            specs = [self.catalog.providers.get(e.provider) for e in all_eps]
            envs = sorted({s.api_key_env for s in specs if s is not None and s.api_key_env})
            hint = f" (set {' or '.join(envs)})" if envs else ""
            return GatewayError(f"model: no provider for {model.id} is configured{hint}, and the local engine "
                                "is not standing in", status=503, param="model", metadata=meta,
                                code="no_available_provider")
        capability = capability_error(step, model, all_eps, meta)
        if capability is not None:
            return capability
        if step == "limits":
            if isinstance(req, SpeechRequest):
                return InvalidRequest(f"input: {len(req.input)} characters is more than any provider of {model.id} "
                                      "accepts", param="input", metadata=meta)
            return PayloadTooLarge(f"audio: {duration or 0:.1f} s of audio is longer than any provider of {model.id} "
                                   "accepts", param="audio", metadata=meta)
        field_name = step
        what = {
            "provider.only": f"none of {req.provider.only} serves {model.id} here (available: {', '.join(names)})",
            "provider.ignore": f"every available provider of {model.id} is ignored ({', '.join(names)})",
            "provider.data_collection": f"no available provider of {model.id} meets data_collection=deny",
            "provider.zdr": f"no available provider of {model.id} offers zero data retention",
            "provider.max_price": f"every available provider of {model.id} costs more than {req.provider.max_price}",
        }.get(step, f"no provider of {model.id} is left")
        return InvalidRequest(f"{field_name}: {what}", param=field_name, metadata=meta, code="no_matching_provider")

    @staticmethod
    def ignored_params(req: TranscriptionRequest | SpeechRequest, endpoint: Endpoint) -> list[str]:
        """The request's soft parameters that `endpoint` cannot honour (and will drop), for Route.ignored_params;
        none with provider.require_parameters, which keeps such endpoints out instead."""
        if req.provider.require_parameters:
            return []
        _, soft = _requirements(req)
        return sorted({p for p, cap in soft if not getattr(endpoint.capabilities, cap)})

    def plan(self, req: TranscriptionRequest | SpeechRequest, kind: Kind,
             duration: float | None = None, *, lengths: bool = True) -> Plan:
        """The candidates that may serve `req`, in the order they are tried (the model's, then its `models`
        fallbacks', local substitutes last, endpoints with an open circuit left out), and a fresh Route to
        record the attempts in. `duration` (seconds of audio) applies the endpoints' audio-length limits (without
        it they are not checked; speech input length is unless `lengths` is false: the candidates for text that
        will be split to fit, or for an estimate). Raises the GatewayError that explains why nothing can serve."""
        self._check_max_price(req.provider.max_price)
        ids = [req.model] + [m for m in (req.models or []) if m != req.model]
        models = [self.resolve(mid, kind, field_name="model" if i == 0 else f"models[{i - 1}]")
                  for i, mid in enumerate(ids)]
        real: list[Candidate] = []
        subs: list[Candidate] = []
        first_error: GatewayError | None = None
        for i, model in enumerate(models):
            if isinstance(req, SpeechRequest) and model.voices:
                try:
                    if not req.voice_object:  # a provider's own voice id is not checked against the catalog
                        self.voice_for(model, model.endpoints[0] if model.endpoints else LOCAL_TTS, req.voice)
                    for k, t in enumerate(req.turns or []):
                        if t.voice:
                            self.voice_for(model, model.endpoints[0] if model.endpoints else LOCAL_TTS, t.voice,
                                           param=f"input[{k}].voice")
                except InvalidRequest:
                    if i == 0:
                        raise
                    continue  # a fallback model without the requested voice is not a fallback
            sel = self._select(model, req, duration, lengths)
            if sel.error is not None:
                first_error = first_error or sel.error
                continue
            for c in sel.cands:
                (subs if c.endpoint.substitute else real).append(c)
        seen: set[str] = set()
        uniq_subs = []
        for c in subs:
            if c.key not in seen:
                seen.add(c.key)
                uniq_subs.append(c)
        cands = real + uniq_subs
        if not cands:
            assert first_error is not None
            raise first_error
        # provisional (the first candidate's); recomputed for the endpoint that serves
        route = Route(model=models[0].id, ignored_params=self.ignored_params(req, cands[0].endpoint))
        open_ = [c for c in cands if c.tracked and not self.health.available(c.key)]
        if open_:
            for c in open_:
                route.skipped.append({"provider": c.endpoint.provider, "endpoint": c.key, "reason": "circuit_open",
                                      "retry_in_s": round(self.health.retry_in(c.key), 1)})
            cands = [c for c in cands if not (c.tracked and not self.health.available(c.key))]
            if not cands:
                wait = max(1, int(min(self.health.retry_in(c.key) for c in open_) + 0.999))
                raise GatewayError(f"model: every provider of {models[0].id} has failed repeatedly and is paused; "
                                   f"retry in {wait}s", status=503, param="model",
                                   metadata={"model": models[0].id, "skipped": route.skipped}, code="circuit_open",
                                   headers={"Retry-After": str(wait)})
        return Plan(cands, route)


    # ---- execution ------------------------------------------------------------------------------
    def _attempt_timeout(self, cand: Candidate) -> float:
        spec = self.catalog.providers.get(cand.endpoint.provider)
        if spec is not None and "timeout_s" in spec.model_fields_set:
            return float(spec.timeout_s)
        return float(self.settings.upstream_timeout_s)

    @staticmethod
    def _verdict(e: GatewayError) -> str:
        """'retry' (same endpoint, then the next), 'next' (the next endpoint at once) or 'fatal'."""
        if isinstance(e, (Overloaded, PayloadTooLarge)):
            return "next"
        if isinstance(e, UpstreamError):
            if not e.retryable or e.upstream_status in (401, 402, 403, 404, 413):
                return "next"
            return "retry"
        if e.status == 413:
            return "next"
        return "fatal"

    @staticmethod
    def _endpoint_fault(cand: Candidate, e: GatewayError) -> bool:
        """Whether a failed attempt says something about the endpoint that every caller shares (its circuit
        breaker, its uptime). A credential refused (401/402/403) is that key's problem, not an outage; and
        the caller's own provider key (BYOK) exhausting its own quota (429) pauses nothing for others."""
        status = getattr(e, "upstream_status", None)
        if status in (401, 402, 403):
            return False
        return not (status == 429 and cand.endpoint.provider in (BYOK_KEYS.get() or {}))

    def _backoff(self, n: int, e: GatewayError) -> float | None:
        ra = getattr(e, "retry_after", None)
        if ra is not None:
            if ra > self.settings.retry_after_max_s:
                return None
            return ra + random.uniform(0, 0.05)
        base = self.settings.retry_backoff_s * (2 ** n)
        top = min(base, self.settings.retry_backoff_max_s)
        return random.uniform(top / 2, top)

    async def _call(self, cand: Candidate, call: Callable[[], Awaitable[Any]], timeout: float | None) -> Any:
        provider = cand.endpoint.provider
        try:
            if timeout is None:
                return await call()
            # wait_for runs the call in a task of its own. asyncio.timeout (same task) was measured slower
            # here, not faster: relayed speech at c=1 0.78 ms p50 against 0.39 ms, at c=32 2336 req/s against
            # 2585, JSON at c=32 1385 against 1634 (bench/profile_gateway.py, same machine, same hour).
            return await asyncio.wait_for(call(), timeout)
        except GatewayError as e:
            # whatever built the message (an upstream's error text, a parser's complaint about its body),
            # the key the adapter sent never reaches the client, the log or the ledger
            raise cand.adapter.scrubbed(e) from None
        except TimeoutError:
            raise UpstreamTimeout(f"{provider}: no answer within {timeout:.1f}s", retryable=True,
                                  metadata={"provider_name": provider}) from None
        except Exception as e:  # an adapter bug must not become a 500: treat it as that endpoint failing
            log.error("adapter %s failed: %s", provider, cand.adapter.scrub("".join(traceback.format_exception(e))))
            raise UpstreamError(f"{provider}: the adapter failed ({e.__class__.__name__})", retryable=False,
                                metadata={"provider_name": provider}) from None

    async def run(self, route: Route, cands: list[Candidate], start: Callable[[Candidate], Awaitable[Any]],
                  units: Callable[[Any], float | None] | None = None) -> tuple[Candidate, Any]:
        """Call `start(candidate)` on `cands` in order, with the retries, backoff, per-attempt timeout, deadline
        and circuit breaker described above, recording every attempt in `route`; returns the candidate that
        served and what `start` returned, or raises the aggregate error. `units(result)` (e.g. seconds of
        audio) feeds the endpoint's throughput history."""
        deadline = time.monotonic() + float(self.settings.request_deadline_s)
        tries = max(1, int(self.settings.retry_attempts))
        last: GatewayError | None = None
        for cand in cands:
            for n in range(tries):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = UpstreamTimeout(f"the request deadline ({self.settings.request_deadline_s}s) passed",
                                           retryable=False, metadata={"model": route.model})
                    raise self._exhausted(route, last)
                if cand.tracked and not self.health.acquire(cand.key):
                    route.skipped.append({"provider": cand.endpoint.provider, "endpoint": cand.key,
                                          "reason": "circuit_open"})
                    break
                timeout = min(self._attempt_timeout(cand), remaining) if cand.tracked else None
                t0 = time.perf_counter()
                try:
                    out = await self._call(cand, functools.partial(start, cand), timeout)
                except GatewayError as e:
                    ms = (time.perf_counter() - t0) * 1000
                    verdict = self._verdict(e)
                    status = getattr(e, "upstream_status", None) or e.status
                    route.attempts.append(Attempt(cand.endpoint.provider, cand.key, status, ms, e.message))
                    if cand.tracked:
                        if verdict == "fatal" or not self._endpoint_fault(cand, e):
                            self.health.release(cand.key)
                        else:
                            self.health.record_failure(cand.key, counts=not isinstance(e, PayloadTooLarge))
                    last = e
                    if verdict == "fatal":
                        raise self._finish_error(route, e) from None
                    if verdict == "next" or n + 1 >= tries:
                        break
                    delay = self._backoff(n, e)
                    if delay is None or delay >= deadline - time.monotonic():
                        break
                    await asyncio.sleep(delay)
                    continue
                except BaseException:
                    if cand.tracked:
                        self.health.release(cand.key)
                    raise
                ms = (time.perf_counter() - t0) * 1000
                route.attempts.append(Attempt(cand.endpoint.provider, cand.key, 200, ms))
                if cand.tracked:
                    u = units(out) if units else None
                    self.health.record_success(cand.key, ms, units=u, seconds=ms / 1000 if u else None)
                route.provider, route.endpoint = cand.endpoint.provider, cand.key
                route.substitute = cand.endpoint.substitute
                if route.substitute or cand.model.id != route.model:
                    route.model = cand.model.id
                return cand, out
        if last is None:
            raise GatewayError(f"model: every provider of {route.model} is paused after repeated failures",
                               status=503, param="model", code="circuit_open",
                               metadata={"model": route.model, "skipped": route.skipped},
                               headers={"Retry-After": str(max(1, int(self.settings.breaker_cooldown_s)))})
        raise self._exhausted(route, last)

    def _finish_error(self, route: Route, e: GatewayError) -> GatewayError:
        if route.attempts:
            e.metadata.setdefault("attempts", route.attempts_metadata())
            e.headers.setdefault("X-Route-Attempts", route.attempts_header())
        return e

    def _exhausted(self, route: Route, last: GatewayError) -> GatewayError:
        statuses = [a.status for a in route.attempts]
        if statuses and all(s == 429 for s in statuses):
            status = 429
        elif statuses and all(s == 504 for s in statuses):
            status = 504
        elif statuses and all(s == 503 for s in statuses):
            status = 503
        elif statuses and all(s == 413 for s in statuses):
            status = 413  # the audio fits no endpoint, even re-encoded
        elif not statuses:
            status = last.status
        else:
            status = 502
        endpoints = {a.endpoint for a in route.attempts}
        if len(endpoints) <= 1:
            # One endpoint (possibly retried): its own error, with the aggregate status.
            if route.attempts:
                last.metadata.setdefault("provider_name", route.attempts[0].provider)
            if isinstance(last, UpstreamError) and status in (429, 502, 503, 504):
                last.status = status
            return self._finish_error(route, last)
        headers = dict(last.headers)
        headers["X-Route-Attempts"] = route.attempts_header()
        err = GatewayError(f"all {len(route.attempts)} attempts on {len(endpoints)} providers failed; "
                           f"last: {last.message}", status=status,
                           metadata={"model": route.model, "attempts": route.attempts_metadata(),
                                     **({"skipped": route.skipped} if route.skipped else {})},
                           code="all_providers_failed" if status != 429 else "rate_limited", headers=headers)
        if status == 429:
            err.type = "rate_limit_error"
        return err

    # ---- transcription --------------------------------------------------------------------------
    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, progress: Any = None, *,
                         plan: Plan | None = None, stream: Callable[[str], None] | None = None,
                         route: Route | None = None) -> TranscriptionResult:
        """Transcribe on `plan`'s candidates (planned here for this audio's duration when not given).
        `progress`: the local engine's progress hook. `stream(delta)`: ask the candidates for their text as it
        comes (adapters with `transcribe_stream`); once a delta has been passed on nothing is retried.
        `route`: where to record the attempts (a fresh one from the plan by default)."""
        if plan is None:
            plan = self.plan(req, "transcription", duration=audio.duration)
        if route is None:
            route = plan.new_route()
        streamed = False

        def on_delta(d: str) -> None:
            nonlocal streamed
            if d:
                streamed = True
            stream(d)  # type: ignore[misc]

        async def start(cand: Candidate) -> Transcript:
            options = dict(req.provider.options.get(cand.endpoint.provider, {}))
            if stream is not None:
                try:
                    return await cand.adapter.transcribe_stream(req, audio, cand.endpoint, options, on_delta)  # type: ignore[attr-defined]
                except UpstreamError as e:
                    if streamed:  # text already reached the client: another attempt would repeat it
                        e.retryable = False
                    raise
            kwargs = {"progress": progress} if progress is not None and cand.endpoint.provider == "local" else {}
            return await cand.adapter.transcribe(req, audio, cand.endpoint, options, **kwargs)  # type: ignore[attr-defined]

        units = None if stream is not None else (lambda _t: audio.duration)
        cand, transcript = await self.run(route, plan.cands, start, units=units)
        route.ignored_params = self.ignored_params(req, cand.endpoint)
        usage = Usage(seconds=audio.duration, input_tokens=transcript.input_tokens,
                      output_tokens=transcript.output_tokens)
        usage.cost = transcription_cost(cand.endpoint.pricing, usage)
        if transcript.duration is None:
            transcript.duration = audio.duration
        return TranscriptionResult(transcript, usage, route)

    # ---- speech ---------------------------------------------------------------------------------
    def voice_for(self, model: Model, endpoint: Endpoint, voice: str | None, param: str = "voice") -> str:
        """Validate the requested voice against the model, then map it to the serving endpoint's voice."""
        local_voices = getattr(self.adapters.get("local"), "voices", ["heart"])
        accepted = {v.lower(): v for v in [*model.voices, *endpoint.voice_map]}
        name = voice or model.default_voice or (model.voices[0] if model.voices else None)
        if name is None:
            name = local_voices[0]
        if name.lower() not in accepted and model.voices:
            raise InvalidRequest(f"{param}: {name!r} is not a voice of {model.id}; choose one of {model.voices}",
                                 param=param, metadata={"voices": model.voices, "model": model.id})
        name = accepted.get(name.lower(), name)
        if endpoint.substitute:
            return local_voices[0]
        return endpoint.voice_map.get(name, name)

    async def speak(self, req: SpeechRequest, *, plan: Plan | None = None) -> SpeechResult:
        """Synthesize on `plan`'s candidates (planned here when not given)."""
        if plan is None:
            plan = self.plan(req, "speech")
        cands, route = plan.cands, plan.new_route()

        async def start(cand: Candidate) -> tuple[SpeechStream, Any]:
            options = dict(req.provider.options.get(cand.endpoint.provider, {}))
            voice = (req.voice if req.voice_object and req.voice
                     else self.voice_for(cand.model, cand.endpoint, req.voice))
            sreq = req
            if req.turns:  # each turn's voice as this endpoint names it
                sreq = replace(req, turns=[replace(
                    t, voice=self.voice_for(cand.model, cand.endpoint, t.voice, param=f"input[{k}].voice")
                    if t.voice else voice) for k, t in enumerate(req.turns)])
            stream = await cand.adapter.synthesize(sreq, cand.endpoint, voice, options)  # type: ignore[attr-defined]
            try:
                first = await anext(stream.chunks)
            except StopAsyncIteration:
                if stream.encoding != "f32":
                    raise UpstreamError(f"{cand.endpoint.provider}: the upstream sent no audio", retryable=True,
                                        metadata={"provider_name": cand.endpoint.provider}) from None
                first = None
            return stream, first

        cand, (stream, first) = await self.run(route, cands, start)
        route.ignored_params = self.ignored_params(req, cand.endpoint)
        usage = Usage(characters=len(req.input))
        p = cand.endpoint.pricing
        if p.per_million_input_tokens is not None:
            usage.input_tokens = stream.input_tokens or estimate_text_tokens(req.input)
        if p.per_million_output_tokens is not None:
            usage.output_tokens = stream.output_tokens
        usage.cost = speech_cost(p, usage)
        t0 = time.perf_counter() - route.attempts[-1].latency_ms / 1000  # when the serving attempt began
        chars = len(req.input)

        def on_end(err: BaseException | None) -> None:
            if not cand.tracked:
                return
            if err is None:
                self.health.record_throughput(cand.key, chars, time.perf_counter() - t0)
            else:
                self.health.record_failure(cand.key)

        return SpeechResult(stream, first, usage, route, on_end)
