"""Usage tracking around every billable request, and the endpoints that read the ledger:

  GET /api/v1/generation?id=<X-Generation-Id>   OpenRouter's generation shape (api_type stt / tts)
  GET /api/v1/generations[?limit=20]             the most recent ones, newest first (same shape; audiorouter's own)
  GET /api/v1/activity[?date=YYYY-MM-DD&api_key_hash=]   cost and usage per UTC day, model and endpoint

`track()` is the one hook the audio routes use:

    async with track(request, req, seconds=duration) as gen:
        result = await router.transcribe(...)
        gen.served(result.route, result.usage)

It attaches the caller's own provider keys (BYOK), estimates the cost from the candidates' catalog prices
(transcription: measured seconds; speech: characters), reserves it on the key (402 if it does not fit),
writes the generation row as `incomplete`, and settles the actual cost once when the block ends. Only the
reservation (keys with a spend limit) is waited for; the rest is queued for the ledger's group commit
(store/ledger.py), and the reads below flush that queue first."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from ..core import metrics
from ..core.chat import ChatRequest
from ..core.errors import ClientClosed, Forbidden, GatewayError, InvalidRequest, NotFound
from ..core.types import SpeechRequest, TranscriptionRequest, Usage
from ..providers.base import BYOK_KEYS
from ..routing.chat import estimate_chat_cost
from ..routing.pricing import estimate_cost
from ..store.keys import iso
from ..store.ledger import NewGeneration, Settlement
from ..store.models import Generation, to_nano, to_usd, utcnow
from .auth import principal
from .context import services

router = APIRouter()
log = logging.getLogger("audiorouter.ledger")
Billable = TranscriptionRequest | SpeechRequest | ChatRequest  # what track() records


def store_unavailable() -> GatewayError:
    return GatewayError("the usage ledger is unavailable; the request was not run", status=503,
                        code="store_unavailable", headers={"Retry-After": "2"})


# ---- estimates (routing/pricing.py's estimate_cost, the router's too) -----------------------------------
def charged(raw: float, is_byok: bool, fee: float) -> float:
    return raw * fee if is_byok else raw


def plan_any_length(svc: Any, req: TranscriptionRequest | SpeechRequest) -> list[Any]:
    """The candidates without the length limits: long audio is chunked and long text split to fit them
    (jobs/transcription.py, jobs/speech.py), so every one of them may serve."""
    kind = "transcription" if isinstance(req, TranscriptionRequest) else "speech"
    return svc.router.plan(req, kind, lengths=False)[0]


def estimate_nano(svc: Any, req: Billable, seconds: float | None,
                  byok: dict[str, str], include_byok: bool, cands: list[Any]) -> int:
    """The most any of `cands` (plan_any_length's) could cost, fallbacks included, as counted toward the key's
    limit; costs use the whole length."""
    fee = svc.settings.byok_fee
    worst = 0
    for c in cands:
        is_byok = c.endpoint.provider in byok
        raw = (estimate_chat_cost(c.endpoint, req, seconds or 0.0) if isinstance(req, ChatRequest)
               else estimate_cost(c.endpoint.pricing, req, seconds))
        amount = charged(raw, is_byok, fee)
        if is_byok and not include_byok:
            amount = 0.0
        worst = max(worst, to_nano(amount))
    return worst


# ---- tracking ------------------------------------------------------------------------------------------
class Tracked:
    def __init__(self, request: Request, new: NewGeneration, reserved: int, byok: dict[str, str],
                 include_byok: bool, cands: list[Any]):
        self.store = request.app.state.store
        self.fee = services(request).settings.byok_fee
        self.new = new
        self.id = new.id
        self.reserved = reserved
        self.byok = byok
        self.include_byok = include_byok
        self.t0 = time.perf_counter()
        self.latency_ms: float | None = None
        self.route: Any = None
        self.usage: Usage | None = None
        self.streaming = False
        self.is_byok = False
        self.upstream = 0.0
        self.cands = cands  # what may serve it, whatever its length (from the estimate)

    def served(self, route: Any, usage: Usage, *, streaming: bool = False) -> None:
        """Record what served the request. BYOK: the caller pays the provider; we charge the fee, and
        usage.cost (which the response reports) becomes what this key is charged."""
        self.latency_ms = (time.perf_counter() - self.t0) * 1000
        self.route, self.usage, self.streaming = route, usage, streaming
        metrics.note_served(route.model, route.provider,  # labels of the request's metrics (api/metrics.py)
                            bool(getattr(route, "cache_hit", False)) if self.new.api_type == "stt" else None)
        self.is_byok = bool(route.provider and route.provider in self.byok)
        self.upstream = usage.cost
        usage.cost = charged(usage.cost, self.is_byok, self.fee)

    def _attempts(self) -> list[dict[str, Any]]:
        out = []
        for a in getattr(self.route, "attempts", None) or []:
            out.append({"provider": a.provider, "endpoint": a.endpoint, "status": a.status,
                        "latency_ms": round(a.latency_ms, 1), "error": a.error, "is_byok": a.provider in self.byok})
        return out

    def success(self) -> Settlement:
        u = self.usage or Usage()
        cost = to_nano(u.cost)
        counted = cost if (not self.is_byok or self.include_byok) else 0
        r = self.route
        return Settlement(status="incomplete" if self.streaming else "success", cost_nano=cost, counted_nano=counted,
                          upstream_cost_nano=to_nano(self.upstream), is_byok=self.is_byok, model=r.model,
                          provider=r.provider, endpoint=r.endpoint, substitute=r.substitute,
                          attempts=self._attempts(), seconds=u.seconds, characters=u.characters,
                          input_tokens=u.input_tokens, output_tokens=u.output_tokens, latency_ms=self.latency_ms,
                          generation_time_ms=(time.perf_counter() - self.t0) * 1000)

    def failure(self, e: BaseException) -> Settlement:
        elapsed = (time.perf_counter() - self.t0) * 1000
        if isinstance(e, (asyncio.CancelledError, GeneratorExit, ClientClosed)):  # the client went away
            return Settlement(status="cancelled", error_type="cancelled", error_message="the client went away",
                              generation_time_ms=elapsed)
        if not isinstance(e, GatewayError):
            return Settlement(status="error", error_type="internal_error", error_status=500,
                              error_message=type(e).__name__, generation_time_ms=elapsed)
        attempts = []
        meta_attempts = e.metadata.get("attempts")
        if isinstance(meta_attempts, list):
            for a in meta_attempts:
                if isinstance(a, dict):
                    attempts.append({"provider": a.get("provider"), "endpoint": a.get("endpoint"),
                                     "status": a.get("status"), "latency_ms": a.get("latency_ms"),
                                     "error": a.get("error"), "is_byok": a.get("provider") in self.byok})
        elif e.metadata.get("provider_name"):
            attempts.append({"provider": e.metadata["provider_name"], "endpoint": None,
                             "status": getattr(e, "upstream_status", None) or e.status, "latency_ms": None,
                             "error": e.message[:500], "is_byok": e.metadata["provider_name"] in self.byok})
        return Settlement(status="error", error_type=e.code, error_status=e.status, error_message=e.message,
                          attempts=attempts, generation_time_ms=elapsed)

    def settle(self, st: Settlement) -> None:
        self.store.ledger.settle(self.id, self.new.key_hash, self.reserved, st)  # queued (store/ledger.py)

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass a streamed answer through; its row becomes success, cancelled or error when it ends."""
        status, err = "cancelled", None
        try:
            async for c in chunks:
                yield c
            status = "success"
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"
            raise
        except Exception as e:
            status, err = "error", e
            raise
        finally:
            self.store.ledger.finish(self.id, status, (time.perf_counter() - self.t0) * 1000, err)


def _models_of(req: Billable) -> list[str]:
    return [req.model] + [m for m in (req.models or []) if m != req.model]


async def caller_keys(request: Request, req: Billable) -> dict[str, str]:
    """Check that the caller may run requests, and load its BYOK keys for `req`'s models, once per request:
    from here on the adapters use them (providers/base.py), so the plan made before the audio is decoded
    (chunk limits) already sees a provider that only the caller's own key makes available."""
    loaded = getattr(request.state, "byok", None)
    if loaded is not None:
        return loaded
    p = principal(request)
    if p is not None and p.is_management:
        raise Forbidden("management keys cannot run requests; create a regular key with POST /api/v1/keys",
                        code="management_key_not_allowed")
    try:
        byok = await request.app.state.store.byok.keys_for(p.hash if p else None, _models_of(req))
    except (SQLAlchemyError, OSError) as e:
        log.error("BYOK keys unavailable: %s", type(e).__name__)
        raise store_unavailable() from None
    BYOK_KEYS.set(byok)  # the adapters' api_key reads it for this request (providers/base.py)
    if isinstance(req, TranscriptionRequest):
        req.extra["byok"] = byok
    request.state.byok = byok
    return byok


@contextlib.asynccontextmanager
async def track(request: Request, req: Billable, *,
                seconds: float | None = None, cands: list[Any] | None = None) -> AsyncIterator[Tracked]:
    """The request's ledger row and spend reservation. `cands`: plan_any_length's answer if the caller has
    it (it is planned here otherwise, and ends on the Tracked object for the caller's later use)."""
    store = request.app.state.store
    svc = services(request)
    byok = await caller_keys(request, req)
    p = principal(request)
    if isinstance(req, ChatRequest):  # api/chat.py: seconds of input audio; streamed when asked
        api_type, streamed, secs, chars = "chat", req.stream, seconds, None
    elif isinstance(req, TranscriptionRequest):
        api_type, streamed, secs, chars = "stt", False, seconds, None
    else:
        api_type, streamed, secs, chars = "tts", True, None, len(req.input)
    new = NewGeneration(
        id=request.state.generation_id, api_type=api_type, path=request.scope["path"], model=req.model,
        key_hash=p.hash if p else None, session_id=req.session_id or request.headers.get("x-session-id"),
        user=req.user, user_agent=request.headers.get("user-agent"),
        http_referer=request.headers.get("http-referer") or request.headers.get("referer"), streamed=streamed,
        seconds=secs, characters=chars)
    include_byok = bool(p and p.include_byok_in_limit)
    try:
        if cands is None:
            if isinstance(req, ChatRequest):
                raise TypeError("track(): a chat request brings its candidates (routing/chat.py plans them)")
            cands = plan_any_length(svc, req)
        estimate = estimate_nano(svc, req, seconds, byok, include_byok, cands)
    except GatewayError as e:
        await store.ledger.record_failure(new, e)
        raise
    try:
        reserved = await store.ledger.begin(new, estimate, limited=bool(p and p.limit_nano is not None))
    except (SQLAlchemyError, OSError) as e:
        log.error("ledger unavailable: %s", type(e).__name__)
        raise store_unavailable() from None
    gen = Tracked(request, new, reserved, byok, include_byok, cands)
    try:
        yield gen
    except BaseException as e:
        gen.settle(gen.failure(e))
        raise
    gen.settle(gen.success() if gen.route is not None else Settlement(status="error", error_type="not_served"))


# ---- lookup --------------------------------------------------------------------------------------------
def _provider_name(svc: Any, slug: str | None) -> str | None:
    if slug is None:
        return None
    spec = svc.router.catalog.providers.get(slug)
    return spec.name if spec is not None else slug


def generation_data(g: Generation, svc: Any) -> dict[str, Any]:
    responses = []
    for a in g.attempts or []:
        responses.append({"status": a.get("status"), "provider_name": _provider_name(svc, a.get("provider")),
                          "endpoint_id": a.get("endpoint"), "model_permaslug": g.model,
                          "latency": a.get("latency_ms"), "is_byok": bool(a.get("is_byok")),
                          **({"error": a["error"]} if a.get("error") else {})})
    cost = to_usd(g.cost_nano)
    finish = {"success": "stop", "error": "error", "cancelled": "cancelled"}.get(g.status)
    return {
        "id": g.id,
        "api_type": g.api_type,
        "model": g.model,
        "provider_name": _provider_name(svc, g.provider),
        "provider_responses": responses,
        "total_cost": cost,
        "usage": cost,
        "upstream_inference_cost": to_usd(g.upstream_cost_nano) if g.is_byok else None,
        "is_byok": g.is_byok,
        "cache_discount": None,
        "created_at": iso(g.created_at),
        "latency": g.latency_ms,
        "generation_time": g.generation_time_ms,
        "moderation_latency": None,
        "streamed": g.streamed,
        "cancelled": g.status == "cancelled",
        "finish_reason": finish,
        "native_finish_reason": finish,
        "tokens_prompt": g.input_tokens,
        "tokens_completion": g.output_tokens,
        "native_tokens_prompt": g.input_tokens,
        "native_tokens_completion": g.output_tokens,
        "native_tokens_cached": None,
        "native_tokens_reasoning": None,
        "native_tokens_completion_images": None,
        "num_input_audio_prompt": 1 if g.api_type == "stt" else None,
        "num_media_prompt": None,
        "num_media_completion": None,
        "num_fetches": None,
        "num_search_results": None,
        "web_search_engine": None,
        "origin": g.http_referer or "",
        "http_referer": g.http_referer,
        "user_agent": g.user_agent,
        "app_id": None,
        "preset_id": None,
        "router": None,
        "service_tier": None,
        "data_region": "global",
        "workspace_id": "default",
        "external_user": g.user,
        "session_id": g.session_id,
        "request_id": None,
        "upstream_id": None,
        # audiorouter extensions
        "status": g.status,
        "error": ({"type": g.error_type, "status": g.error_status, "message": g.error_message}
                  if g.error_type else None),
        "seconds": g.seconds,
        "characters": g.characters,
        "endpoint": g.endpoint,
        "provider": g.provider,
        "substitute": g.substitute,
        "estimated_cost": to_usd(g.estimate_nano),
        "completed_at": iso(g.completed_at),
        "api_key_hash": g.key_hash,
    }


def ok(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@router.get("/api/v1/generation")
async def get_generation(request: Request) -> Response:
    gid = request.query_params.get("id")
    if not gid or not gid.strip():
        raise InvalidRequest("id: required query parameter (the X-Generation-Id of a response)", param="id")
    if len(gid) > 64:
        raise InvalidRequest("id: not a generation id", param="id")
    p = principal(request)
    row = await request.app.state.store.ledger.get(gid.strip())
    if row is None or (p is not None and not p.is_management and row.key_hash != p.hash):
        raise NotFound(f"id: generation {gid!r} not found", param="id", code="generation_not_found")
    return ok({"data": generation_data(row, services(request))})


@router.get("/api/v1/generations")
async def recent_generations(request: Request) -> Response:
    """The newest generations first: a regular key's own, everyone's for a management key (or auth off)."""
    raw = request.query_params.get("limit") or "20"
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
        raise InvalidRequest(f"limit: expected an integer from 1 to 100, got {raw[:20]!r}", param="limit")
    p = principal(request)
    q = select(Generation).order_by(Generation.created_at.desc()).limit(int(raw))
    if p is not None and not p.is_management:
        q = q.where(Generation.key_hash == p.hash)
    store = request.app.state.store
    await store.ledger.flush()
    async with store.db.sessions() as s:
        rows = (await s.execute(q)).scalars().all()
    svc = services(request)
    return ok({"data": [generation_data(g, svc) for g in rows]})


@router.get("/api/v1/activity")
async def activity(request: Request) -> Response:
    """Per UTC day, model and endpoint: charged cost, requests, tokens, seconds, characters (last 30 days,
    today included). A regular key sees its own activity; a management key everyone's."""
    p = principal(request)
    key_filter = request.query_params.get("api_key_hash") or None
    if p is not None and not p.is_management:
        if key_filter and key_filter != p.hash:
            raise Forbidden("api_key_hash: a regular key can only see its own activity", param="api_key_hash")
        key_filter = p.hash
    today = utcnow().date()
    day = request.query_params.get("date")
    if day:
        try:
            d = date.fromisoformat(day)
        except ValueError:
            raise InvalidRequest(f"date: {day!r} is not a date like 2026-11-21", param="date") from None
        if d < today - timedelta(days=30) or d > today:
            raise InvalidRequest("date: must be within the last 30 days", param="date")
        start, end = d, d + timedelta(days=1)
    else:
        start, end = today - timedelta(days=30), today + timedelta(days=1)
    t0 = datetime(start.year, start.month, start.day, tzinfo=UTC)
    t1 = datetime(end.year, end.month, end.day, tzinfo=UTC)
    day_col = func.date(Generation.created_at)
    q = (select(day_col, Generation.model, Generation.endpoint, func.min(Generation.provider),
                func.sum(Generation.cost_nano),
                func.sum(case((Generation.is_byok.is_(True), Generation.upstream_cost_nano), else_=0)),
                func.count(), func.sum(func.coalesce(Generation.input_tokens, 0)),
                func.sum(func.coalesce(Generation.output_tokens, 0)), func.sum(func.coalesce(Generation.seconds, 0.0)),
                func.sum(func.coalesce(Generation.characters, 0)))
         .where(Generation.created_at >= t0, Generation.created_at < t1, Generation.provider.is_not(None))
         .group_by(day_col, Generation.model, Generation.endpoint))
    if key_filter:
        q = q.where(Generation.key_hash == key_filter)
    store = request.app.state.store
    await store.ledger.flush()
    async with store.db.sessions() as s:
        rows = (await s.execute(q)).all()
    svc = services(request)
    data = []
    for day_v, model, endpoint, provider, cost, byok, n, tin, tout, secs, chars in rows:
        data.append({"date": str(day_v)[:10], "model": model, "model_permaslug": model, "endpoint_id": endpoint or "",
                     "provider_name": _provider_name(svc, provider) or "", "usage": to_usd(int(cost or 0)),
                     "byok_usage_inference": to_usd(int(byok or 0)), "requests": int(n), "prompt_tokens": int(tin or 0),
                     "completion_tokens": int(tout or 0), "reasoning_tokens": 0, "cached_tokens": 0,
                     "seconds": round(float(secs or 0), 3), "characters": int(chars or 0)})
    data.sort(key=lambda r: (r["date"], r["model"], r["endpoint_id"]), reverse=True)
    return ok({"data": data})

