"""GET /api/v1/models (and /v1/models) in OpenRouter's shape, endpoints per model, and voices."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import InvalidRequest, NotFound
from ..core.types import SPEECH_FORMATS
from ..providers.chat import chat_client
from ..routing.catalog import Endpoint, Model
from ..routing.chat import ChatPlanner, hears, speaks
from ..routing.router import LOCAL_STT, LOCAL_TTS
from .context import services

router = APIRouter()
API_SPEED_RANGE = (0.25, 4.0)  # what a speech request may ask (api/parsing.py); an adapter's speed_range narrows it
MODALITIES = {"text", "image", "file", "audio", "video", "embeddings", "speech", "transcription", "rerank"}


def _price_str(v: float | None) -> str:
    return "0" if not v else f"{v:.12f}".rstrip("0").rstrip(".")


def pricing(e: Endpoint) -> dict[str, Any]:
    p = e.pricing
    out: dict[str, Any] = {
        "prompt": _price_str((p.per_million_input_tokens or 0) / 1e6),
        "completion": _price_str((p.per_million_output_tokens or 0) / 1e6),
        "request": _price_str(p.per_request),
    }
    if p.per_second is not None:
        out["audio"] = _price_str(p.per_second)  # per second of input audio
        out["unit"] = "second"
    elif p.per_million_characters is not None:
        out["prompt"] = _price_str(p.per_million_characters / 1e6)  # per input character
        out["unit"] = "character"
    else:
        out["unit"] = "token" if (p.per_million_input_tokens or p.per_million_output_tokens) else "request"
    if p.per_million_audio_input_tokens is not None:  # chat: per audio token in / out
        out["audio"] = _price_str(p.per_million_audio_input_tokens / 1e6)
    if p.per_million_audio_output_tokens is not None:
        out["audio_output"] = _price_str(p.per_million_audio_output_tokens / 1e6)
    return out


def supported_parameters(m: Model, eps: list[Endpoint]) -> list[str]:
    caps = [e.capabilities for e in eps]
    if m.kind == "chat":
        params = ["messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "user",
                  "metadata", "stream", "provider", "models"]
        if any(c.audio_output for c in caps):
            params += ["modalities", "audio"]
        return params
    if m.kind == "transcription":
        params = ["language", "response_format", "provider"]
        for name, cap in (("prompt", "prompt"), ("temperature", "temperature"),
                          ("timestamp_granularities", "word_timestamps"), ("diarize", "diarization"),
                          ("keyterms", "keyterms"), ("stream", "streaming"), ("include", "logprobs"),
                          ("chunking_strategy", "chunking_strategy"), ("known_speaker_names", "known_speakers")):
            if any(getattr(c, cap) for c in caps):
                params.append(name)
        return params
    params = ["voice", "response_format", "provider"]
    for name, cap in (("speed", "speed"), ("instructions", "instructions"), ("stream_format", "streaming")):
        if any(getattr(c, cap) for c in caps):
            params.append(name)
    return params


def voice_entries(m: Model) -> list[dict[str, Any]]:
    """Each voice of a speech model: id, name, language and gender where known, preview text (the catalog's
    voice_details; the model's preview text for voices without their own), whether it is the default."""
    out = []
    for v in m.voices:
        info = m.voice_details.get(v)
        out.append({"id": v, "name": (info.name if info and info.name else v), "default": v == m.default_voice,
                    "language": info.language if info else None, "gender": info.gender if info else None,
                    "preview_text": (info.preview_text if info and info.preview_text else m.voice_preview_text)})
    return out


def speed_range(request: Request, e: Endpoint) -> tuple[float, float]:
    adapter = services(request).router.adapters.get(e.provider)
    lo, hi = getattr(adapter, "speed_range", None) or API_SPEED_RANGE
    return max(lo, API_SPEED_RANGE[0]), min(hi, API_SPEED_RANGE[1])


def speech_parameters(request: Request, m: Model, eps: list[Endpoint]) -> dict[str, Any]:
    """OpenRouter's SpeechSupportedParameters for these endpoints (their envelope: enums unioned, ranges
    widened): voice {type: enum, values} (unknown when the catalog lists none), response_format {type: enum,
    values}, speed {type: range, min, max} where the endpoints take a speed, instructions {type: unknown} where
    they take instructions."""
    out: dict[str, Any] = {"voice": {"type": "enum", "values": list(m.voices)} if m.voices else {"type": "unknown"},
                           "response_format": {"type": "enum", "values": list(SPEECH_FORMATS)}}
    speeds = [speed_range(request, e) for e in eps if e.capabilities.speed]
    if speeds:
        out["speed"] = {"type": "range", "min": min(lo for lo, _ in speeds), "max": max(hi for _, hi in speeds)}
    if any(e.capabilities.instructions for e in eps):
        out["instructions"] = {"type": "unknown"}
    return out


def speech_model_json(request: Request, m: Model) -> dict[str, Any]:
    """A speech model in OpenRouter's SpeechModelResponse shape (GET /api/v1/audio/speech/models): the model's
    parameters as the envelope of its endpoints', and each endpoint with its own; `voices` (ours) describes
    each voice."""
    svc = services(request)
    eps = model_endpoints(request, m)
    text_in = [{"type": "text"}]

    def speech_out(these: list[Endpoint]) -> list[dict[str, Any]]:
        return [{"type": "speech", "supported_parameters": speech_parameters(request, m, these)}]

    endpoints = []
    for e in eps:
        spec = svc.router.catalog.providers.get(e.provider)
        endpoints.append({"provider_name": spec.name if spec else e.provider, "provider_slug": e.provider,
                          "input_modalities": text_in, "output_modalities": speech_out([e]),
                          "available": svc.router.usable(e)})
    return {"id": m.id, "name": m.name, "description": m.description or "", "created": m.created,
            "input_modalities": text_in, "output_modalities": speech_out(eps), "endpoints": endpoints,
            "voices": voice_entries(m)}


def architecture(m: Model) -> dict[str, Any]:
    if m.kind == "chat":
        ins = ["text"] + (["audio"] if hears(m) else [])
        outs = ["text"] + (["audio"] if speaks(m) else [])
        return {"modality": f"{'+'.join(ins)}->{'+'.join(outs)}", "input_modalities": ins, "output_modalities": outs,
                "tokenizer": "Other", "instruct_type": None}
    if m.kind == "transcription":
        return {"modality": "audio->text", "input_modalities": ["audio"], "output_modalities": ["transcription"],
                "tokenizer": "Other", "instruct_type": None}
    return {"modality": "text->audio", "input_modalities": ["text"], "output_modalities": ["speech"],
            "tokenizer": "Other", "instruct_type": None}


def model_endpoints(request: Request, m: Model) -> list[Endpoint]:
    svc = services(request)
    if m.kind == "chat":
        return ChatPlanner(svc.router, chat_client).endpoints(m)
    eps = list(m.endpoints)
    if svc.settings.local_substitute and m.author != "local" and "local" in svc.router.adapters:
        eps.append(LOCAL_STT if m.kind == "transcription" else LOCAL_TTS)
    return eps


def model_json(request: Request, m: Model) -> dict[str, Any]:
    router_ = services(request).router
    eps = model_endpoints(request, m)
    usable = [e for e in eps if router_.usable(e)]
    top = (usable or eps)[0]
    limits = top.limits
    return {
        "id": m.id,
        "canonical_slug": m.id,
        "hugging_face_id": None,
        "name": m.name,
        "created": m.created,
        "description": m.description,
        "context_length": limits.max_characters,
        "architecture": architecture(m),
        "pricing": pricing(top),
        "top_provider": {"context_length": limits.max_characters, "max_completion_tokens": None,
                         "is_moderated": False, "provider": top.provider, "substitute": top.substitute},
        # OpenRouter's per_request_limits are token limits ({prompt_tokens, completion_tokens}, both required
        # by its SDKs); audio endpoints have none, so null. The media limits are under "limits".
        "per_request_limits": None,
        "limits": ({"max_bytes": limits.max_bytes, "max_seconds": limits.max_seconds,
                    "max_characters": limits.max_characters}
                   if any((limits.max_bytes, limits.max_seconds, limits.max_characters)) else None),
        "supported_parameters": supported_parameters(m, usable or eps),
        "supported_voices": m.voices or None if m.kind == "speech" or (m.kind == "chat" and speaks(m)) else None,
        **({"voices": voice_entries(m)} if m.kind == "speech" else {}),  # ours: each voice described
        "expiration_date": m.expiration_date,
        "default_parameters": None,
        "links": {"details": f"/api/v1/models/{m.id}/endpoints"},
        "available": bool(usable),
    }


def _filter(request: Request, name: str = "output_modalities") -> set[str] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    wanted = {x.strip().lower() for x in raw.split(",") if x.strip()}
    if not wanted or "all" in wanted:  # an empty value filters nothing, like no parameter
        return None
    bad = wanted - MODALITIES
    if bad:
        raise InvalidRequest(f"{name}: unknown modality {sorted(bad)[0]!r}; use one of "
                             f"{', '.join(sorted(MODALITIES))} or all", param=name)
    return wanted


@router.get("/api/v1/models")
@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    wanted = _filter(request)
    wanted_in = _filter(request, "input_modalities")
    out = []
    for m in services(request).router.catalog.models.values():
        arch = architecture(m)
        if wanted is not None and not wanted & set(arch["output_modalities"]):
            continue
        if wanted_in is not None and not wanted_in & set(arch["input_modalities"]):
            continue
        item = model_json(request, m)
        if request.url.path.startswith("/v1/"):
            item.update(object="model", owned_by=m.author)
        out.append(item)
    body: dict[str, Any] = {"data": out, "links": {"next": None}, "total_count": len(out)}  # OpenRouter's list shape
    if request.url.path.startswith("/v1/"):
        body["object"] = "list"
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/api/v1/model/{author}/{slug}")  # OpenRouter's SDKs: models.get(author, slug)
@router.get("/api/v1/models/{author}/{slug}")
@router.get("/v1/models/{author}/{slug}")
async def get_model(request: Request, author: str, slug: str) -> Response:
    """One model (OpenAI's GET /v1/models/{model}, which the SDKs' models.retrieve() calls)."""
    svc = services(request)
    mid = f"{author}/{slug}"
    m = svc.router.catalog.find(mid)
    if m is None:
        raise NotFound(f"model: {mid!r} does not exist", param="model",
                       metadata={"suggestions": svc.router.catalog.suggestions(mid)})
    item = model_json(request, m)
    if request.url.path.startswith("/v1/"):
        item.update(object="model", owned_by=m.author)
        return Response(orjson.dumps(item), media_type="application/json")
    return Response(orjson.dumps({"data": item}), media_type="application/json")


@router.get("/api/v1/models/{author}/{slug}/endpoints")
@router.get("/v1/models/{author}/{slug}/endpoints")
async def model_endpoints_route(request: Request, author: str, slug: str) -> Response:
    svc = services(request)
    mid = f"{author}/{slug}"
    m = svc.router.catalog.find(mid)
    if m is None:
        raise NotFound(f"model {mid!r} does not exist", param="model",
                       metadata={"suggestions": svc.router.catalog.suggestions(mid)})
    eps = []
    for e in model_endpoints(request, m):
        prov = svc.router.catalog.providers[e.provider]
        caps = e.capabilities
        health = svc.router.health.snapshot(e.key)
        eps.append({
            "name": f"{prov.name} | {m.id}",
            "model_id": m.id, "model_name": m.name,
            "provider_name": prov.name, "tag": e.provider, "upstream_model": e.upstream_model,
            "context_length": e.limits.max_characters or 0, "max_completion_tokens": None, "max_prompt_tokens": None,
            "pricing": pricing(e), "quantization": None, "service_tier": None,
            "supported_parameters": supported_parameters(m, [e]),
            "supports_diarization": caps.diarization, "supports_implicit_caching": False,
            "supports_tool_choice": {"none": False, "auto": False, "required": False, "function": False},
            "native_tools": {},
            "status": 0 if svc.router.usable(e) else -1,
            "available": svc.router.usable(e),
            "substitute": e.substitute,
            "input_formats": e.input_formats, "output_formats": e.output_formats,
            "limits": e.limits.model_dump(),
            "capabilities": caps.model_dump(),
            "zdr": e.zdr, "data_collection": e.data_collection,
            # measured by the router (routing/health.py). OpenRouter's latency/throughput_last_30m are
            # percentile objects ({p50, p75, p90, p99}); the router keeps moving averages, not percentiles, so
            # those are null and the averages have their own fields: ms to answer (transcription) or to the
            # first audio (speech); seconds of audio or characters per second.
            "uptime_last_5m": None, "uptime_last_30m": health["uptime"], "uptime_last_1d": None,
            "latency_last_30m": None, "throughput_last_30m": None,
            "latency_ewma_ms": health["latency_ms"], "throughput_ewma": health["throughput"],
            "circuit": health["circuit"],
        })
    body = {"data": {"id": m.id, "name": m.name, "created": m.created, "description": m.description,
                     "architecture": architecture(m), "endpoints": eps}}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/audio/voices")
@router.get("/api/v1/audio/voices")
async def voices(request: Request) -> Response:
    svc = services(request)
    mid = request.query_params.get("model")
    models = [_find_speech_model(svc, mid)] if mid else list(svc.router.catalog.by_kind("speech"))
    data = []
    for m in models:
        aliases = sorted({k for e in m.endpoints for k in e.voice_map})
        custom = any(e.capabilities.custom_voices for e in m.endpoints)
        for v in voice_entries(m):
            data.append({**v, "model": m.id, "custom_voices": custom})
        for a in aliases:
            data.append({"id": a, "name": a, "model": m.id, "alias_of": m.endpoints[0].voice_map[a], "default": False})
    return Response(orjson.dumps({"data": data}), media_type="application/json")


def _speech_model(request: Request, author: str, slug: str) -> Model:
    return _find_speech_model(services(request), f"{author}/{slug}")


def _find_speech_model(svc: Any, mid: str) -> Model:
    """The speech model `mid` names: a 404 with suggestions when there is none, a 400 when it is not speech."""
    m = svc.router.catalog.find(mid)
    if m is None:
        raise NotFound(f"model: {mid!r} does not exist", param="model",
                       metadata={"suggestions": svc.router.catalog.suggestions(mid, "speech")})
    if m.kind != "speech":
        raise InvalidRequest(f"model: {m.id} is not a speech model", param="model")
    return m


@router.get("/api/v1/audio/speech/models")
async def speech_models(request: Request) -> Response:
    """OpenRouter's list of text-to-speech models (SpeechModelsListResponse {data: [SpeechModelResponse]})."""
    models = services(request).router.catalog.by_kind("speech")
    return Response(orjson.dumps({"data": [speech_model_json(request, m) for m in models]}),
                    media_type="application/json")


@router.get("/api/v1/audio/speech/models/{author}/{slug}")
async def speech_model(request: Request, author: str, slug: str) -> Response:
    """One text-to-speech model (OpenRouter's get-speech-model: the SpeechModelResponse itself)."""
    return Response(orjson.dumps(speech_model_json(request, _speech_model(request, author, slug))),
                    media_type="application/json")


# What is public about each built-in adapter's company, for GET /api/v1/providers (OpenRouter's shape: the
# openrouter SDK 1.3.84 operations.ListProvidersResponse {data: [{name, slug, privacy_policy_url,
# terms_of_service_url?, status_page_url?, headquarters?, datacenters?}]}). A provider the operator adds with
# another adapter name gets nulls.
PROVIDER_INFO: dict[str, dict[str, Any]] = {
    "openai": {"privacy_policy_url": "https://openai.com/policies/privacy-policy/",
               "terms_of_service_url": "https://openai.com/policies/terms-of-use/",
               "status_page_url": "https://status.openai.com/", "headquarters": "US"},
    "groq": {"privacy_policy_url": "https://groq.com/privacy-policy/",
             "terms_of_service_url": "https://groq.com/terms-of-use/",
             "status_page_url": "https://groqstatus.com/", "headquarters": "US"},
    "google": {"privacy_policy_url": "https://policies.google.com/privacy",
               "terms_of_service_url": "https://cloud.google.com/terms/",
               "status_page_url": "https://status.cloud.google.com/", "headquarters": "US"},
    "mistral": {"privacy_policy_url": "https://mistral.ai/terms/#privacy-policy",
                "terms_of_service_url": "https://mistral.ai/terms/",
                "status_page_url": "https://status.mistral.ai/", "headquarters": "FR"},
    "deepgram": {"privacy_policy_url": "https://deepgram.com/privacy",
                 "terms_of_service_url": "https://deepgram.com/terms",
                 "status_page_url": "https://status.deepgram.com/", "headquarters": "US"},
    "elevenlabs": {"privacy_policy_url": "https://elevenlabs.io/privacy-policy",
                   "terms_of_service_url": "https://elevenlabs.io/terms-of-use",
                   "status_page_url": "https://status.elevenlabs.io/", "headquarters": "US"},
    "openrouter": {"privacy_policy_url": "https://openrouter.ai/privacy",
                   "terms_of_service_url": "https://openrouter.ai/terms",
                   "status_page_url": "https://status.openrouter.ai/", "headquarters": "US"},
}


@router.get("/api/v1/providers")
async def providers(request: Request) -> Response:
    """The catalog's providers in OpenRouter's shape (GET /api/v1/providers, the openrouter SDKs'
    providers.list()), with `available` added: whether the provider can serve now (a key is set, ...)."""
    svc = services(request)
    data = []
    for slug, p in svc.router.catalog.providers.items():
        info = PROVIDER_INFO.get(p.adapter, {})
        adapter = svc.router.adapters.get(slug)
        data.append({"name": p.name, "slug": slug,
                     "privacy_policy_url": info.get("privacy_policy_url"),
                     "terms_of_service_url": info.get("terms_of_service_url"),
                     "status_page_url": info.get("status_page_url"),
                     "headquarters": info.get("headquarters"), "datacenters": None,
                     "available": bool(adapter is not None and adapter.available())})
    return Response(orjson.dumps({"data": data}), media_type="application/json")
