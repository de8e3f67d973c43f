"""Direct dispatch for the audio endpoints, the requests that carry the load.

FastAPI still declares these routes (OpenAPI, /docs), but a request for one of them does not walk FastAPI's
route table, dependency solver, exception middleware and per-request exit stacks: this middleware, the
innermost of ours, calls the handler itself. That stack cost more than reading the key and the body did
(bench/probe). The handlers take a plain Starlette Request, so nothing they rely on is skipped; errors are
rendered exactly as the app's exception handlers render them."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import GatewayError
from .errors import error_response

Handler = Callable[[Request], Awaitable[Response]]


class FastRoutes:
    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], Handler],
                 on_error: Callable[[Exception, str], Response | None]):
        self.app = app
        self.routes = routes
        self.on_error = on_error  # other exception types the app maps to answers (the store's 503)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope.get("method", ""), scope["path"])) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive, send))
        except GatewayError as e:
            response = error_response(e, scope["path"])
        except Exception as e:
            mapped = self.on_error(e, scope["path"])
            if mapped is None:
                raise  # the generation-id middleware answers 500
            response = mapped
        await response(scope, receive, send)


def audio_routes() -> dict[tuple[str, str], Handler]:
    from . import speech, transcriptions
    routes: dict[tuple[str, str], Handler] = {}
    for prefix in ("/api/v1", "/v1"):
        routes[("POST", f"{prefix}/audio/transcriptions")] = transcriptions.transcriptions
        routes[("POST", f"{prefix}/audio/translations")] = transcriptions.translations
        routes[("POST", f"{prefix}/audio/speech")] = speech.speech
    return routes
