"""Candidate selection and prices for chat requests (POST /chat/completions), on top of the Router's execution
(retries, backoff, per-attempt timeouts, deadline, circuit breaker: Router.run).

Selection, per model then its `models` fallbacks in order: the model's catalog endpoints plus, for a model that
hears or speaks (an endpoint with audio_input or audio_output), the offline voice-chat cascade as a last-resort
substitute (the catalog's local/voice-chat endpoint, marked substitute). Filtered by
  input_audio parts on a model no endpoint of which hears audio          -> 400 naming the part and the model
  modalities ["audio"] on a model none of which speaks                   -> 400 naming modalities and the model
  a parameter with provider.require_parameters that no endpoint supports -> 400 naming the parameter
  configured (the provider has its key; a cascade: each step is servable) -> 503 when none is
  provider.only / ignore / data_collection / zdr                         -> 400 naming the field
  the capabilities those need (audio in / out; with provider.require_parameters every parameter the request
  sets: temperature)                                                     -> 400 naming the parameter
  provider.max_price (prompt, completion, request, total)                -> 400 naming provider.max_price
ordered by provider.order, then provider.sort (price: the estimate below; latency / throughput: measured),
else catalog order, substitutes last; allow_fallbacks=false keeps the first (or the listed providers).

Prices: `per_million_input_tokens` / `per_million_output_tokens` are text tokens, and
`per_million_audio_input_tokens` / `per_million_audio_output_tokens` audio tokens (absent: the text price);
`per_minute` / `per_second` bills the question's audio by its length (Mistral's Voxtral), on top.
usage.prompt_tokens and completion_tokens include the audio tokens (OpenAI's accounting)."""
from __future__ import annotations

import math
from typing import Any

from ..core.chat import ChatRequest, ChatUsage
from ..core.errors import GatewayError, InvalidRequest
from .catalog import Endpoint, Model, Pricing
from .pricing import STT_INPUT_TOKENS_PER_SECOND, STT_OUTPUT_TOKENS_PER_SECOND, TTS_OUTPUT_TOKENS_PER_SECOND
from .router import (
    Candidate,
    Requirement,
    Route,
    Router,
    capability_error,
    capability_steps,
    max_price_check,
    preference_steps,
    required_parameters,
    unsupported_parameter,
)

# Estimates only (settlement uses the provider's counts), the rates of routing/pricing.py (sourced there): audio
# tokens in per second of the question, audio tokens out per second of the answer, text tokens a second of speech.
AUDIO_IN_TOKENS_PER_S = STT_INPUT_TOKENS_PER_SECOND
AUDIO_OUT_TOKENS_PER_S = TTS_OUTPUT_TOKENS_PER_SECOND
SPOKEN_TEXT_TOKENS_PER_S = STT_OUTPUT_TOKENS_PER_SECOND
DEFAULT_ANSWER_TOKENS = 256
MAX_PRICE_KEYS = ("prompt", "completion", "request", "total", "audio")


def chat_cost(p: Pricing, u: ChatUsage) -> float:
    text_in = max(0, u.prompt_tokens - u.prompt_audio_tokens)
    text_out = max(0, u.completion_tokens - u.completion_audio_tokens)
    pin, pout = p.per_million_input_tokens or 0.0, p.per_million_output_tokens or 0.0
    pai = p.per_million_audio_input_tokens if p.per_million_audio_input_tokens is not None else pin
    pao = p.per_million_audio_output_tokens if p.per_million_audio_output_tokens is not None else pout
    per_second = (p.per_second or 0.0) * (u.audio_seconds_in or 0.0)  # audio in billed by the minute (Mistral)
    return p.per_request + per_second + (text_in * pin + u.prompt_audio_tokens * pai + text_out * pout
                                         + u.completion_audio_tokens * pao) / 1e6


def estimated_usage(req: ChatRequest, audio_seconds: float) -> ChatUsage:
    """The tokens a request may use: its text and audio in, and an answer of max_tokens (default 256) text
    tokens, spoken when audio output is asked for."""
    text_in = math.ceil(req.text_chars() / 4) + 4 * len(req.messages)
    audio_in = math.ceil(audio_seconds * AUDIO_IN_TOKENS_PER_S)
    out = req.max_tokens or DEFAULT_ANSWER_TOKENS
    audio_out = math.ceil(out / SPOKEN_TEXT_TOKENS_PER_S * AUDIO_OUT_TOKENS_PER_S) if req.wants_audio else 0
    return ChatUsage(prompt_tokens=text_in + audio_in, prompt_audio_tokens=audio_in,
                     completion_tokens=out + audio_out, completion_audio_tokens=audio_out,
                     audio_seconds_in=audio_seconds or None)


def estimate_chat_cost(e: Endpoint, req: ChatRequest, audio_seconds: float) -> float:
    return chat_cost(e.pricing, estimated_usage(req, audio_seconds))


def unit_prices(e: Endpoint) -> dict[str, float]:
    p = e.pricing
    return {"prompt": (p.per_million_input_tokens or 0.0) / 1e6,
            "completion": (p.per_million_output_tokens or 0.0) / 1e6,
            "audio": (p.per_million_audio_input_tokens or 0.0) / 1e6, "request": p.per_request}


def speaks(m: Model) -> bool:
    return any(e.capabilities.audio_output for e in m.endpoints)


def hears(m: Model) -> bool:
    return any(e.capabilities.audio_input for e in m.endpoints)


def chat_requirements(req: ChatRequest) -> tuple[list[Requirement], list[Requirement]]:
    """(hard, soft) requirements as (request parameter, endpoint capability), as routing/router.py has them for
    the audio endpoints: hard ones always exclude an endpoint that lacks them, soft ones only with
    provider.require_parameters."""
    hard: list[Requirement] = []
    parts = req.audio_parts()
    if parts:
        hard.append((parts[0].path, "audio_input"))
    if req.wants_audio:
        hard.append(("modalities", "audio_output"))
    soft: list[Requirement] = []
    if req.params.get("temperature") is not None:
        soft.append(("temperature", "temperature"))
    return hard, soft


class ChatPlanner:
    def __init__(self, router: Router, chat_client: Any):
        self.router = router
        self.chat_client = chat_client  # adapter -> its chat client or None (providers/chat.py)

    # ---- which endpoints -------------------------------------------------------------------------------
    def substitute(self) -> Endpoint | None:
        """The offline voice-chat cascade (catalog local/voice-chat) as a stand-in endpoint."""
        if not self.router.settings.local_substitute or "local" not in self.router.adapters:
            return None
        m = self.router.catalog.models.get("local/voice-chat")
        if m is None or not m.endpoints:
            return None
        return m.endpoints[0].model_copy(update={"substitute": True})

    def endpoints(self, m: Model) -> list[Endpoint]:
        eps = list(m.endpoints)
        if m.author != "local" and (speaks(m) or hears(m)):
            sub = self.substitute()
            if sub is not None:  # standing in for what the model does, no more
                caps = sub.capabilities.model_copy(update={"audio_input": hears(m), "audio_output": speaks(m)})
                eps.append(sub.model_copy(update={"capabilities": caps}))
        return eps

    def usable(self, e: Endpoint) -> bool:
        if e.cascade is not None:
            return all(self._servable(mid) for mid in (e.cascade.transcription, e.cascade.chat, e.cascade.speech))
        a = self.router.adapters.get(e.provider)
        return a is not None and a.available() and self.chat_client(a) is not None

    def _servable(self, model_id: str) -> bool:
        m = self.router.catalog.find(model_id)
        if m is None:
            return False
        if m.kind == "chat":
            return any(self.usable(e) for e in m.endpoints)
        if any(self.router.usable(e) for e in m.endpoints):
            return True
        return self.router.settings.local_substitute and "local" in self.router.adapters

    # ---- selection ---------------------------------------------------------------------------------------
    def _select(self, model: Model, req: ChatRequest, audio_seconds: float) -> list[Candidate]:
        all_eps = self.endpoints(model)
        prefs = req.provider
        hard, soft = chat_requirements(req)
        why = {"audio_input": f"{model.id} does not accept audio input",
               "audio_output": f"{model.id} does not produce audio output"}
        for param, cap in hard:  # the audio ones, with a hint where to look
            if not any(getattr(e.capabilities, cap) for e in all_eps):
                raise InvalidRequest(f"{param}: {why[cap]}; choose a model that does (GET /api/v1/models?"
                                     f"{'input' if cap == 'audio_input' else 'output'}_modalities=audio)",
                                     param=param, metadata={"model": model.id, "parameter": param},
                                     code="unsupported_parameter")
        required = required_parameters(hard, soft, prefs)
        unsupported = unsupported_parameter(model, all_eps, required)
        if unsupported is not None:
            raise unsupported
        mp = prefs.max_price or {}
        within_price = max_price_check(mp, lambda e: estimate_chat_cost(e, req, audio_seconds))
        steps = preference_steps(self.usable, prefs) + capability_steps(required)
        if mp:
            steps.append(("provider.max_price", within_price))
        eps = all_eps
        for name, keep in steps:
            kept = [e for e in eps if keep(e)]
            if not kept:
                raise self._error(name, model, eps, all_eps, req)
            eps = kept
        rank = {p.lower(): i for i, p in enumerate(prefs.order or [])}
        index = {id(e): i for i, e in enumerate(eps)}
        health = self.router.health

        def metric(e: Endpoint) -> float:
            if prefs.sort == "price":
                return estimate_chat_cost(e, req, audio_seconds)
            if prefs.sort == "latency":
                v = health.latency(e.key)
                return v if v is not None else float("inf")
            if prefs.sort == "throughput":
                v = health.throughput(e.key)
                return -v if v is not None else float("inf")
            return 0.0

        eps = sorted(eps, key=lambda e: (e.substitute, rank.get(e.provider.lower(), len(rank)), metric(e),
                                         index[id(e)]))
        if not prefs.allow_fallbacks:
            listed = [e for e in eps if e.provider.lower() in rank]
            eps = listed if listed else eps[:1]
        return [Candidate(model, e, self.router.adapters[e.provider]) for e in eps]

    def _error(self, step: str, model: Model, before: list[Endpoint], all_eps: list[Endpoint],
               req: ChatRequest) -> GatewayError:
        names = sorted({e.provider for e in before})
        meta: dict[str, Any] = {"model": model.id, "providers": names}
        if step == "configured":
            provs = self.router.catalog.providers
            envs = sorted({env for e in all_eps if e.provider in provs
                           and (env := provs[e.provider].api_key_env)})
            hint = f" (set {' or '.join(envs)})" if envs else ""
            return GatewayError(f"model: no provider for {model.id} is configured{hint}, and the local engine is not "
                                "standing in", status=503, param="model", metadata=meta, code="no_available_provider")
        capability = capability_error(step, model, all_eps, meta)
        if capability is not None:
            return capability
        what = {
            "provider.only": f"none of {req.provider.only} serves {model.id} here (available: {', '.join(names)})",
            "provider.ignore": f"every available provider of {model.id} is ignored ({', '.join(names)})",
            "provider.data_collection": f"no available provider of {model.id} meets data_collection=deny",
            "provider.zdr": f"no available provider of {model.id} offers zero data retention",
            "provider.max_price": f"every available provider of {model.id} costs more than {req.provider.max_price}",
        }.get(step, f"no provider of {model.id} is left")
        return InvalidRequest(f"{step}: {what}", param=step, metadata=meta, code="no_matching_provider")

    def plan(self, req: ChatRequest, audio_seconds: float = 0.0) -> tuple[list[Candidate], Route]:
        for k in req.provider.max_price or {}:
            if k not in MAX_PRICE_KEYS:
                raise InvalidRequest(f"provider.max_price.{k}: unknown price unit; use one of "
                                     f"{', '.join(MAX_PRICE_KEYS)}", param=f"provider.max_price.{k}")
        ids = [req.model] + [m for m in (req.models or []) if m != req.model]
        models = [self.router.resolve(mid, "chat", field_name="model" if i == 0 else f"models[{i - 1}]")
                  for i, mid in enumerate(ids)]
        real: list[Candidate] = []
        subs: list[Candidate] = []
        first_error: GatewayError | None = None
        for i, model in enumerate(models):
            if req.voice and req.wants_audio and model.voices and req.voice.lower() not in \
                    {v.lower() for v in [*model.voices, *[k for e in model.endpoints for k in e.voice_map]]}:
                err = InvalidRequest(f"audio.voice: {req.voice!r} is not a voice of {model.id}; choose one of "
                                     f"{model.voices}", param="audio.voice",
                                     metadata={"voices": model.voices, "model": model.id})
                if i == 0:
                    raise err
                first_error = first_error or err
                continue
            try:
                cands = self._select(model, req, audio_seconds)
            except GatewayError as e:
                if i == 0 and e.status == 400 and not req.models:
                    raise
                first_error = first_error or e
                continue
            for c in cands:
                (subs if c.endpoint.substitute else real).append(c)
        seen: set[str] = set()
        cands = list(real)
        for c in subs:
            if c.key not in seen:
                seen.add(c.key)
                cands.append(c)
        if not cands:
            assert first_error is not None
            raise first_error
        route = Route(model=models[0].id)
        open_ = [c for c in cands if c.tracked and not self.router.health.available(c.key)]
        for c in open_:
            route.skipped.append({"provider": c.endpoint.provider, "endpoint": c.key, "reason": "circuit_open"})
        cands = [c for c in cands if c not in open_] or cands
        return cands, route

