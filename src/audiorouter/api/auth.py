"""Authentication and per-key request limits for /api/* and /v1/* (ASGI middleware).

Auth is on once any key exists (or AUDIOROUTER_REQUIRE_AUTH=true): `Authorization: Bearer <key>`; missing or
unknown key -> 401, expired -> 401, disabled -> 403. With auth off (no key was ever created) requests are
served without a key; the server refuses to bind a non-loopback address in that state unless told to
(store/state.py). /health and the model catalog stay open. Then the key's request rate (sliding 60 s) and
concurrency are checked -> 429 with Retry-After; X-RateLimit-* headers go on every answer.

Auth mode and keys come from in-process caches (store/cache.py): no database round trip per request."""
from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import AuthError, Forbidden, GatewayError, RateLimited
from ..store.keys import Principal, iso
from ..store.models import utcnow
from .errors import error_response

log = logging.getLogger("audiorouter.auth")

OPEN_PATHS = {"/health", "/api/v1/health", "/v1/health"}
PUBLIC_PREFIXES = ("/api/v1/models", "/v1/models", "/api/v1/providers")  # the catalog is public, as on OpenRouter


def _bearer(scope: Scope) -> tuple[bool, str | None]:
    """(header present, token). A present header that is not `Bearer <token>` gives (True, None)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            raw = value.decode("latin-1").strip()
            scheme, _, cred = raw.partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                return True, cred.strip()
            return True, None
    return False, None


async def authenticate(store: Any, scope: Scope) -> Principal | None:
    present, token = _bearer(scope)
    required = await store.auth_required()
    if token is None:
        if not required:
            return None
        if present:
            raise AuthError("Authorization: expected 'Bearer <API key>'", param="Authorization",
                            code="invalid_authorization_header", headers={"WWW-Authenticate": "Bearer"})
        raise AuthError("missing API key: send the header 'Authorization: Bearer <API key>'", param="Authorization",
                        code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    row = await store.keys.lookup(token)  # an in-process copy (store/cache.py); expiry is checked right here
    if row is None:
        if not required:
            return None  # no keys exist yet: SDKs always send some token; serve without one
        raise AuthError("invalid API key (unknown, deleted or mistyped)", param="Authorization",
                        code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if row.disabled:
        raise Forbidden(f"this API key ({row.label}) is disabled", code="key_disabled",
                        metadata={"key_hash": row.hash})
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise AuthError(f"this API key ({row.label}) expired at {iso(row.expires_at)}", code="key_expired",
                        metadata={"key_hash": row.hash, "expired_at": iso(row.expires_at)},
                        headers={"WWW-Authenticate": "Bearer"})
    return row


def principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


class AuthMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or not (path.startswith(("/api/", "/v1/")))
                or path in OPEN_PATHS or path.startswith(PUBLIC_PREFIXES)):
            await self.app(scope, receive, send)
            return
        store = scope["app"].state.store
        settings = store.settings
        state = scope.setdefault("state", {})
        member = state.get("generation_id") or f"req-{id(scope)}"
        try:
            p = await authenticate(store, scope)
            extra: dict[str, str] = {}
            rpm = conc = None
            if p is not None:
                rpm = p.rate_limit_rpm or settings.default_rpm
                conc = p.max_concurrency or settings.default_concurrency
                if rpm:
                    d = await store.limits.hit(p.hash, rpm, member)
                    extra = d.headers()
                    if not d.allowed:
                        raise RateLimited(f"rate limit exceeded: {rpm} requests per minute for this key; retry in "
                                          f"{extra['Retry-After']} s", headers=extra, code="rate_limit_exceeded",
                                          metadata={"limit": rpm, "interval": "60s"})
                if conc and not await store.limits.acquire(p.hash, conc, member):
                    raise RateLimited(f"too many concurrent requests: this key allows {conc} at a time",
                                      headers={**extra, "Retry-After": "1", "X-Concurrency-Limit": str(conc)},
                                      code="concurrency_limit_exceeded", metadata={"max_concurrency": conc})
        except GatewayError as e:
            await error_response(e, path)(scope, receive, send)
            return
        except Exception as e:  # database or Redis down
            log.error("key store unavailable: %s", type(e).__name__)
            err = GatewayError("the key store is unavailable; retry shortly", status=503, code="store_unavailable",
                               headers={"Retry-After": "2"})
            await error_response(err, path)(scope, receive, send)
            return
        state["principal"] = p
        raw = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_limits(message: Message) -> None:
            if raw and message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + raw
            await send(message)

        if p is not None and conc:
            async with store.limits.slot(p.hash, member):
                await self.app(scope, receive, send_with_limits)
        else:
            await self.app(scope, receive, send_with_limits)


def require_management(request: Request) -> Principal | None:
    """Management endpoints: a management key, or anyone while auth is off (loopback, no keys yet)."""
    p = principal(request)
    if p is None:
        return None
    if not p.is_management:
        raise Forbidden("this endpoint needs a management key (create one with `audiorouter keys create "
                        "--management` or set AUDIOROUTER_MANAGEMENT_KEY)", code="management_key_required")
    return p


async def start_store(store: Any) -> None:
    """Start the store at app start-up; a configuration problem stops the server with one clear line."""
    from ..store.db import StoreConfigError
    try:
        await store.start()
    except StoreConfigError as e:
        log.error("%s", e)
        raise SystemExit(f"audiorouter: {e}") from None


def store_error_response(exc: Exception, path: str) -> Response | None:
    """A database error met while answering: 503 with Retry-After (None for any other exception)."""
    from sqlalchemy.exc import SQLAlchemyError
    if not isinstance(exc, SQLAlchemyError):
        return None
    log.error("store error on %s: %s", path, type(exc).__name__)
    return error_response(GatewayError("the key store is unavailable; retry shortly", status=503,
                                       code="store_unavailable", headers={"Retry-After": "2"}), path)


def install(app: Any) -> None:
    """Add the auth middleware and map store outages to 503 (call before the generation-id middleware)."""
    from sqlalchemy.exc import SQLAlchemyError

    async def on_store_error(request: Request, exc: Exception):
        return store_error_response(exc, request.url.path)

    app.add_exception_handler(SQLAlchemyError, on_store_error)
    app.add_middleware(AuthMiddleware)
