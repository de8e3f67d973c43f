"""Keys, credits and BYOK endpoints, shaped like OpenRouter's (its Python SDK's api_keys, credits and byok
calls work against them):

  GET    /api/v1/key                 the calling key
  POST   /api/v1/keys                create (management key); the secret is in this answer only
  GET    /api/v1/keys                list (management key)
  GET    /api/v1/keys/{hash}         one key
  PATCH  /api/v1/keys/{hash}         name, limit, limit_reset, expires_at, disabled, include_byok_in_limit,
                                     rate_limit_rpm, max_concurrency
  DELETE /api/v1/keys/{hash}
  GET    /api/v1/credits
  GET|POST /api/v1/byok, GET|PATCH|DELETE /api/v1/byok/{id}   provider keys of your own
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import APIRouter
from pydantic import BeforeValidator, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import GatewayError, InvalidRequest, NotFound
from ..store.byok import byok_data
from ..store.crypto import SecretUnavailable
from ..store.keys import LIMIT_RESETS, iso, key_data, limit_remaining, next_reset, window_usage_nano
from ..store.models import ApiKey, to_usd, utcnow
from .auth import principal, require_management
from .context import services
from .parsing import parse_json, read_body
from .validation import Body, validate

router = APIRouter()

MAX_BODY = 64 * 1024
HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def store_of(request: Request):
    return request.app.state.store


def ok(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def body_of(request: Request) -> dict[str, Any]:
    return parse_json(await read_body(request, MAX_BODY))


# ---- bodies (api/validation.py: pydantic models, the first error a 400 naming the field) --------------
def _expiry(v: Any) -> Any:
    """expires_at: an ISO 8601 timestamp in the future (UTC when it names no zone)."""
    if v is None or isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise ValueError("expected an ISO 8601 UTC timestamp like 2027-01-31T23:59:59Z")
    try:
        t = datetime.fromisoformat(v.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{v[:40]!r} is not an ISO 8601 timestamp like 2027-01-31T23:59:59Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t <= utcnow():
        raise ValueError(f"{v[:40]!r} is in the past")
    return t


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Secret = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)]
Slug = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Usd = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]  # a spend limit
Reset = Literal["daily", "weekly", "monthly"]
assert set(get_args(Reset)) == set(LIMIT_RESETS), "store/keys.py LIMIT_RESETS changed"
Rpm = Annotated[int, Field(ge=1, le=1_000_000)]
Concurrency = Annotated[int, Field(ge=1, le=10_000)]
Expiry = Annotated[datetime, BeforeValidator(_expiry)]
NonEmptyStrings = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class KeyCreate(Body):
    name: Name
    limit: Usd | None = None
    limit_reset: Reset | None = None
    expires_at: Expiry | None = None
    include_byok_in_limit: bool | None = None
    rate_limit_rpm: Rpm | None = None
    max_concurrency: Concurrency | None = None
    is_management_key: bool | None = None


class KeyUpdate(Body):
    """Only the fields sent are changed; null clears the ones that may be cleared."""
    name: Name = ""
    disabled: bool = False
    include_byok_in_limit: bool = False
    limit: Usd | None = None
    limit_reset: Reset | None = None
    expires_at: Expiry | None = None
    rate_limit_rpm: Rpm | None = None
    max_concurrency: Concurrency | None = None


class ByokCreate(Body):
    provider: Slug
    key: Secret
    name: Label | None = None
    allowed_api_key_hashes: NonEmptyStrings | None = None
    allowed_models: NonEmptyStrings | None = None
    disabled: bool | None = None
    is_fallback: bool | None = None


class ByokUpdate(Body):
    key: Secret = ""
    name: Label | None = None
    allowed_api_key_hashes: NonEmptyStrings | None = None
    allowed_models: NonEmptyStrings | None = None
    disabled: bool = False
    is_fallback: bool = False


def sent(body: Body) -> dict[str, Any]:
    """The fields the client sent, validated."""
    return {k: getattr(body, k) for k in body.model_fields_set}


def v_query_bool(request: Request, k: str) -> bool:
    v = request.query_params.get(k)
    if v is None or v == "":
        return False
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise InvalidRequest(f"{k}: expected true or false, got {v!r}", param=k)


def v_query_int(request: Request, k: str, default: int, lo: int, hi: int) -> int:
    v = request.query_params.get(k)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise InvalidRequest(f"{k}: expected an integer, got {v!r}", param=k) from None
    if n < lo or n > hi:
        raise InvalidRequest(f"{k}: must be between {lo} and {hi}", param=k)
    return n


def v_hash(h: str) -> str:
    if not HASH_RE.match(h):
        raise InvalidRequest("hash: expected the key's 64-character hex hash (see GET /api/v1/keys)", param="hash")
    return h


# ---- the calling key -----------------------------------------------------------------------------------
@router.get("/api/v1/key")
async def current_key(request: Request) -> Response:
    store, p = store_of(request), principal(request)
    svc = services(request)
    if p is None:  # auth off: an anonymous view of the whole gateway
        usage, byok = await store.keys.totals(None)
        windows = await store.keys.usage_windows(None)
        return ok({"data": {
            "label": "anonymous (no keys configured)", "limit": None, "limit_remaining": None, "limit_reset": None,
            "usage": usage, "byok_usage": byok, **windows, "include_byok_in_limit": False, "is_free_tier": False,
            "is_management_key": False, "is_provisioning_key": False, "allowed_data_regions": ["global"],
            "budgets": [], "effective_budget": None, "creator_user_id": None, "organization_id": None,
            "workspace_id": "default", "expires_at": None,
            "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
            "rate_limit": {"requests": -1, "interval": "60s", "note": "authentication is off: no limits apply"},
        }})
    row = await store.keys.get(p.hash)
    if row is None:
        raise NotFound("this key was deleted", code="key_not_found")
    windows = await store.keys.usage_windows(row.hash)
    data = key_data(row, windows)
    rpm = row.rate_limit_rpm or svc.settings.default_rpm
    budget = _budget(row)
    data.update({
        "is_free_tier": False, "is_provisioning_key": row.is_management, "allowed_data_regions": ["global"],
        "budgets": [budget] if budget else [], "effective_budget": budget, "organization_id": None,
        "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
        "rate_limit": {"requests": rpm or -1, "interval": "60s",
                       "note": f"{rpm} requests per sliding minute" if rpm else "no request-rate limit on this key"},
    })
    return ok({"data": data})


def _budget(row: ApiKey) -> dict[str, Any] | None:
    if row.limit_nano is None:
        return None
    spend = window_usage_nano(row)
    return {"scope": "key_limit", "budget_id": None, "guardrail_id": None, "include_byok": row.include_byok_in_limit,
            "limit_usd": to_usd(row.limit_nano), "spend_usd": to_usd(spend),
            "remaining_usd": limit_remaining(row) or 0.0, "reset_interval": row.limit_reset,
            "resets_at": iso(next_reset(row.limit_reset)) if row.limit_reset else None}


# ---- management ----------------------------------------------------------------------------------------
@router.post("/api/v1/keys")
async def create_key(request: Request) -> Response:
    require_management(request)
    k = validate(KeyCreate, await body_of(request))
    fields = {"limit": k.limit, "limit_reset": k.limit_reset, "expires_at": k.expires_at,
              "include_byok_in_limit": bool(k.include_byok_in_limit), "rate_limit_rpm": k.rate_limit_rpm,
              "max_concurrency": k.max_concurrency, "is_management": bool(k.is_management_key)}
    row, secret = await store_of(request).keys.create(name=k.name, **fields)
    return ok({"data": key_data(row), "key": secret}, status=201)


@router.get("/api/v1/keys")
async def list_keys(request: Request) -> Response:
    require_management(request)
    rows = await store_of(request).keys.list(include_disabled=v_query_bool(request, "include_disabled"),
                                             include_expired=v_query_bool(request, "include_expired"),
                                             offset=v_query_int(request, "offset", 0, 0, 10**9), limit=100)
    return ok({"data": [key_data(r) for r in rows]})


async def _key_or_404(request: Request, h: str) -> ApiKey:
    row = await store_of(request).keys.get(v_hash(h))
    if row is None:
        raise NotFound(f"hash: no key with hash {h}", param="hash", code="key_not_found")
    return row


@router.get("/api/v1/keys/{key_hash}")
async def get_key(request: Request, key_hash: str) -> Response:
    require_management(request)
    row = await _key_or_404(request, key_hash)
    return ok({"data": key_data(row, await store_of(request).keys.usage_windows(row.hash))})


UPDATABLE = ("name", "disabled", "limit", "limit_reset", "expires_at", "include_byok_in_limit", "rate_limit_rpm",
             "max_concurrency")


@router.patch("/api/v1/keys/{key_hash}")
async def update_key(request: Request, key_hash: str) -> Response:
    require_management(request)
    v_hash(key_hash)
    d = await body_of(request)
    if not isinstance(d, dict) or not any(k in d for k in UPDATABLE):
        raise InvalidRequest(f"No update fields provided (accepted: {', '.join(UPDATABLE)})", param="body")
    changes = sent(validate(KeyUpdate, d))
    store = store_of(request)
    row = await store.keys.update(key_hash, changes)
    if row is None:
        raise NotFound(f"hash: no key with hash {key_hash}", param="hash", code="key_not_found")
    return ok({"data": key_data(row, await store.keys.usage_windows(row.hash))})


@router.delete("/api/v1/keys/{key_hash}")
async def delete_key(request: Request, key_hash: str) -> Response:
    require_management(request)
    if not await store_of(request).keys.delete(v_hash(key_hash)):
        raise NotFound(f"hash: no key with hash {key_hash}", param="hash", code="key_not_found")
    return ok({"deleted": True})


# ---- credits -------------------------------------------------------------------------------------------
@router.get("/api/v1/credits")
async def credits(request: Request) -> Response:
    """A limited key: its limit and what it has used of it in the current window. Unlimited keys and the
    gateway as a whole (management key, or auth off): total_credits equals total_usage (nothing prepaid)."""
    store, p = store_of(request), principal(request)
    if p is not None and not p.is_management:
        row = await store.keys.get(p.hash)
        if row is None:
            raise NotFound("this key was deleted", code="key_not_found")
        if row.limit_nano is not None:
            used = to_usd(window_usage_nano(row))
            return ok({"data": {"total_credits": to_usd(row.limit_nano), "total_usage": used,
                                "limit_remaining": limit_remaining(row), "limit_reset": row.limit_reset}})
        usage = to_usd(row.usage_nano)
        return ok({"data": {"total_credits": usage, "total_usage": usage, "limit_remaining": None,
                            "limit_reset": None}})
    usage, _ = await store.keys.totals(None)
    return ok({"data": {"total_credits": usage, "total_usage": usage, "limit_remaining": None, "limit_reset": None}})


# ---- BYOK ----------------------------------------------------------------------------------------------
def _provider(request: Request, slug: str) -> str:
    providers = services(request).router.catalog.providers
    if slug == "local":
        raise InvalidRequest("provider: the built-in local engine needs no key", param="provider")
    if slug not in providers:
        raise InvalidRequest(f"provider: {slug!r} is not a provider of this gateway; one of "
                             f"{', '.join(sorted(p for p in providers if p != 'local'))}", param="provider")
    return slug


async def _key_hashes(request: Request, hashes: list[str] | None) -> list[str] | None:
    """allowed_api_key_hashes: each the hash of a key of this gateway; duplicates dropped."""
    if hashes is None:
        return None
    store = store_of(request)
    for h in hashes:
        if not HASH_RE.match(h) or await store.keys.get(h) is None:
            raise InvalidRequest(f"allowed_api_key_hashes: {h[:80]!r} is not the hash of a key of this gateway",
                                 param="allowed_api_key_hashes")
    return list(dict.fromkeys(hashes))


def _unsupported(d: dict) -> None:
    for k in ("is_byok_only", "is_required"):
        if d.get(k):
            raise InvalidRequest(f"{k}: not supported by this gateway (the gateway's own keys stay as a fallback)",
                                 param=k)


@router.get("/api/v1/byok")
async def list_byok(request: Request) -> Response:
    require_management(request)
    provider = request.query_params.get("provider") or None
    rows, total = await store_of(request).byok.list(offset=v_query_int(request, "offset", 0, 0, 10**9),
                                                    limit=v_query_int(request, "limit", 50, 1, 100), provider=provider)
    return ok({"data": [byok_data(r) for r in rows], "total_count": total})


@router.post("/api/v1/byok")
async def create_byok(request: Request) -> Response:
    require_management(request)
    d = await body_of(request)
    b = validate(ByokCreate, d)
    provider = _provider(request, b.provider)
    _unsupported(d)
    try:
        row = await store_of(request).byok.create(
            provider=provider, key=b.key, name=b.name,
            allowed_api_key_hashes=await _key_hashes(request, b.allowed_api_key_hashes),
            allowed_models=list(dict.fromkeys(b.allowed_models)) if b.allowed_models else None,
            disabled=bool(b.disabled), is_fallback=bool(b.is_fallback))
    except SecretUnavailable as e:
        raise GatewayError(str(e), status=503, code="secret_key_missing") from None
    return ok({"data": byok_data(row)}, status=201)


async def _byok_or_404(request: Request, byok_id: str):
    row = await store_of(request).byok.get(byok_id)
    if row is None:
        raise NotFound(f"id: no provider key with id {byok_id!r}", param="id", code="byok_key_not_found")
    return row


@router.get("/api/v1/byok/{byok_id}")
async def get_byok(request: Request, byok_id: str) -> Response:
    require_management(request)
    return ok({"data": byok_data(await _byok_or_404(request, byok_id))})


@router.patch("/api/v1/byok/{byok_id}")
async def update_byok(request: Request, byok_id: str) -> Response:
    require_management(request)
    await _byok_or_404(request, byok_id)
    d = await body_of(request)
    _unsupported(d)
    changes = sent(validate(ByokUpdate, d))
    if "allowed_api_key_hashes" in changes:
        changes["allowed_api_key_hashes"] = await _key_hashes(request, changes["allowed_api_key_hashes"])
    if changes.get("allowed_models"):
        changes["allowed_models"] = list(dict.fromkeys(changes["allowed_models"]))
    if not changes:
        raise InvalidRequest("No update fields provided", param="body")
    try:
        row = await store_of(request).byok.update(byok_id, changes)
    except SecretUnavailable as e:
        raise GatewayError(str(e), status=503, code="secret_key_missing") from None
    if row is None:
        raise NotFound(f"id: no provider key with id {byok_id!r}", param="id", code="byok_key_not_found")
    return ok({"data": byok_data(row)})


@router.delete("/api/v1/byok/{byok_id}")
async def delete_byok(request: Request, byok_id: str) -> Response:
    require_management(request)
    if not await store_of(request).byok.delete(byok_id):
        raise NotFound(f"id: no provider key with id {byok_id!r}", param="id", code="byok_key_not_found")
    return ok({"deleted": True})
