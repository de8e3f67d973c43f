"""Routes of the web app: the app shell (/, /playground), the docs pages (/docs, /redoc) and /static/*.

Security headers on all of them: the app's CSP allows scripts, styles, fonts and fetches from this origin
only (no inline script or style, no remote origin); the two docs pages differ only in allowing inline styles,
which Swagger UI and Redoc set at run time."""
from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

APP_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
           "media-src 'self' blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
           "form-action 'none'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def security_headers(csp: str) -> dict[str, str]:
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
            "Permissions-Policy": "microphone=(self), camera=(), geolocation=()"}


class WithHeaders:
    """Adds fixed headers to every response of the wrapped ASGI app (the static files)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]):
        self.app = app
        self.raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.raw
            await send(message)

        await self.app(scope, receive, send_with)


def page(name: str, csp: str):
    path = STATIC / name

    async def serve() -> Response:
        return FileResponse(path, media_type="text/html; charset=utf-8",
                            headers={**security_headers(csp), "Cache-Control": "no-cache"})

    return serve


def mount(app) -> None:
    """Add the web app's routes to the FastAPI app (call with FastAPI's own docs routes turned off)."""
    for url in ("/", "/playground"):
        app.add_api_route(url, page("index.html", APP_CSP), methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/docs", page("docs.html", DOCS_CSP), methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/redoc", page("redoc.html", DOCS_CSP), methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", WithHeaders(StaticFiles(directory=STATIC), security_headers(APP_CSP)), name="static")
