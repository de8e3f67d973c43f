"""The ASGI application: dialect routes on top of one router, with generation ids and error envelopes."""
from __future__ import annotations

import logging
import os
import random
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, web
from ..config import Settings, get_settings
from ..core import metrics as core_metrics
from ..core.errors import ClientClosed, GatewayError
from ..providers.registry import build_adapters
from ..routing.catalog import Catalog
from ..routing.router import Router
from ..store import Store
from . import (
    auth,
    batch,
    chat,  # POST /api/v1/chat/completions, /v1/chat/completions (audio chat)
    generations,
    health,
    keys,
    metrics,
    models,
    speech,
    transcriptions,
)
from .errors import error_response
from .fastpath import FastRoutes, audio_routes
from .guard import BrowserGuard
from .openapi_doc import install as document_openapi

log = logging.getLogger("audiorouter")


@dataclass
class Services:
    settings: Settings
    router: Router
    version: str = __version__


# Generation ids are not secrets (a lookup is scoped to its key): a seeded PRNG, no urandom call per request,
# reseeded in forked children so two processes never share a sequence.
_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def new_generation_id() -> str:
    return f"gen-{int(time.time())}-{_ids.getrandbits(72).to_bytes(9, 'big').hex()}"


def receive_body(receive: Receive) -> Receive:
    """`receive`, except that the client leaving before the body is complete raises ClientClosed (a
    GatewayError: answered like any other, no traceback, the ledger row cancelled) wherever the body is being
    read, instead of Starlette's ClientDisconnect, which is no error class of ours and would be a 500.
    Disconnects after the body (streamed answers watch for them) pass through as they are."""
    body_done = False

    async def wrapped() -> Message:
        nonlocal body_done
        message = await receive()
        if message["type"] == "http.request":
            body_done = not message.get("more_body", False)
        elif message["type"] == "http.disconnect" and not body_done:
            raise ClientClosed("the client closed the connection before the request body was complete")
        return message
    return wrapped


class GenerationIdMiddleware:
    """Gives every API request a generation id (request.state.generation_id) and puts it on the response,
    errors included."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].startswith("/api/") or scope["path"].startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        gen_id = new_generation_id()
        scope.setdefault("state", {})["generation_id"] = gen_id
        core_metrics.generation_id.set(gen_id)  # every log line of this request carries it (core/logs.py)
        raw = gen_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*list(message["headers"]), (b"x-generation-id", raw)]
            await send(message)

        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send_with_id(message)

        try:
            await self.app(scope, receive_body(receive), send_tracking)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            if started:
                raise
            resp = error_response(GatewayError("internal error; the request was not completed", status=500,
                                               code="internal_error"), scope["path"])
            await resp(scope, receive, send_with_id)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    catalog = Catalog.load(settings.catalog)
    adapters = build_adapters(catalog, settings)
    svc = Services(settings=settings, router=Router(catalog, adapters, settings))
    store = Store(settings)  # keys, ledger, limits (store/)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await auth.start_store(store)
        for a in adapters.values():
            await a.start()
        from ..jobs.worker import close_runtime, open_runtime  # batch jobs (jobs/batch.py)
        app.state.jobs = await open_runtime(settings, svc.router, store)
        yield
        await close_runtime(app.state.jobs)
        for a in adapters.values():
            await a.aclose()
        await store.close()

    otel = settings.opentelemetry
    app = FastAPI(title="audiorouter", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json",
                  telemetry={"tracing": otel, "metrics": otel, "logs": otel})
    app.state.services = svc
    app.state.store = store
    document_openapi(app)  # /openapi.json with the bodies, query parameters and error envelopes
    core_metrics.set_enabled(settings.metrics)
    if settings.metrics:
        metrics.install(app)  # GET /metrics (Prometheus; a management key when auth is on)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(404)
    async def on_404(request: Request, exc: Any) -> Response:
        return error_response(GatewayError(f"{request.method} {request.url.path} is not an endpoint of this server",
                                           status=404, code="not_found"), request.url.path)

    @app.exception_handler(405)
    async def on_405(request: Request, exc: Any) -> Response:
        return error_response(GatewayError(f"method {request.method} is not allowed on {request.url.path}",
                                           status=405, code="method_not_allowed"), request.url.path)

    for r in (transcriptions.router, speech.router, chat.router, models.router, health.router, keys.router,
              generations.router, batch.router):
        app.include_router(r)
    web.mount(app)  # the Playground at / and /playground, /docs and /redoc from packaged assets (web/)
    # the audio endpoints straight to their handlers (innermost of our middlewares: auth and ids still apply)
    app.add_middleware(FastRoutes, routes=audio_routes(), on_error=auth.store_error_response)
    auth.install(app)  # key auth + per-key limits (inside the generation-id middleware)
    # Host (DNS rebinding), Origin (CORS) and Content-Type rules for every route, before auth
    app.add_middleware(BrowserGuard, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins)
    if settings.metrics:
        app.add_middleware(metrics.MetricsMiddleware)  # status, latency, bytes, model and provider per request
    app.add_middleware(GenerationIdMiddleware)
    return app
