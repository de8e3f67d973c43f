"""What a web page in the user's browser may do to this server (ASGI middleware, outside auth and the fast
routes, so it holds for every route, the audio ones included).

* DNS rebinding: while no key exists (a loopback install), a request whose Host is not a loopback name
  (localhost, 127.x.y.z, [::1], any port) or one of AUDIOROUTER_ALLOWED_HOSTS gets 403. A page at
  evil.example whose name is re-pointed at 127.0.0.1 reaches us with `Host: evil.example`; it cannot choose
  a loopback Host. With keys, the page has no key to send.
* Cross-site requests: a request carrying an `Origin` that is neither this server's own (the Origin's host
  and port equal the Host header: a page served by this server, such as the playground) nor in
  AUDIOROUTER_CORS_ORIGINS gets 403, before anything runs, preflight or not. Browsers send Origin on every
  cross-origin `fetch`/XHR and on every POST, so a form post or a no-cors `fetch` is refused too, not merely
  unreadable (an image or link GET carries none: no GET here changes anything, and its answer is
  unreadable). Allowed origins get CORS answers (preflight included) from Starlette's CORSMiddleware.
* JSON bodies: POST, PUT and PATCH under /api/ and /v1/ must say `Content-Type: application/json` (the audio
  transcription and translation routes also take `multipart/form-data`), else 415. `text/plain` and
  urlencoded forms are what a page may send cross-site without a preflight.

Requests without Origin (curl, SDKs, servers) are untouched by the second rule. The cost on the request path
is one pass over the headers and a dictionary lookup for the Host."""
from __future__ import annotations

import ipaddress

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import Forbidden, GatewayError, InvalidRequest
from .auth import store_error_response
from .errors import error_response

UPLOAD_SUFFIXES = ("/audio/transcriptions", "/audio/translations", "/audio/transcriptions/jobs")  # also multipart
EXPOSED = ("X-Generation-Id", "X-Model", "X-Provider", "X-Provider-Endpoint", "X-Provider-Substitute", "X-Cost",
           "X-Characters", "X-Cache", "X-Attempts", "X-Route-Attempts", "X-Ignored-Parameters", "X-Chunks",
           "X-Audio-Duration", "X-Audio-Format-Detected", "X-Audio-Format-Mismatch", "X-Audio-Decode-Errors",
           "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Interval",
           "X-Concurrency-Limit", "Retry-After")


def split_list(value: str) -> list[str]:
    return [v.strip().lower().rstrip("/") for v in (value or "").split(",") if v.strip()]


def host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1", "Example.com:80" -> "example.com"."""
    h = host.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_netloc(origin: str) -> str:
    """"https://Example.com:443" -> "example.com"; the scheme's default port is dropped, as Host drops it."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep:
        return ""
    rest = rest.split("/", 1)[0]
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return rest[:-len(default)] if default and rest.endswith(default) else rest


class BrowserGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: str = "", cors_origins: str = ""):
        self.app = app
        hosts = split_list(allowed_hosts)
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)
        origins = split_list(cors_origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self.cors = CORSMiddleware(app, allow_origins=origins, allow_methods=("GET", "POST", "PATCH", "DELETE"),
                                   allow_headers=("*",), expose_headers=EXPOSED, allow_private_network=True,
                                   max_age=600) if origins else None
        self._host_ok: dict[bytes, bool] = {}  # Host header -> accepted without a key

    def host_ok(self, raw: bytes) -> bool:
        ok = self._host_ok.get(raw)
        if ok is None:
            name = host_name(raw.decode("latin-1"))
            ok = self.any_host or loopback_name(name) or name in self.hosts
            if len(self._host_ok) > 1024:  # Host values are the client's to choose: keep the memo bounded
                self._host_ok.clear()
            self._host_ok[raw] = ok
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = ctype = None
        for k, v in scope["headers"]:
            if k == b"host":
                host = v
            elif k == b"origin":
                origin = v
            elif k == b"content-type":
                ctype = v
        path = scope["path"]
        if host is not None and not self.host_ok(host):
            try:
                keyless = not await scope["app"].state.store.auth_required()
            except Exception as e:  # the store cannot say: answered as auth answers that (503), not a 500
                answer = store_error_response(e, path)
                if answer is None:
                    raise
                return await answer(scope, receive, send)
            if keyless:
                shown = host.decode("latin-1")[:100]
                return await self.refuse(Forbidden(
                    f"Host: {shown!r} is not accepted while this server has no API keys (DNS rebinding "
                    "protection): use localhost or 127.0.0.1, create a key, or list the name in "
                    "AUDIOROUTER_ALLOWED_HOSTS", code="host_not_allowed", param="Host"), scope, receive, send)
        app = self.app
        if origin is not None:
            o = origin.decode("latin-1").strip().lower().rstrip("/")
            if host is None or origin_netloc(o) != host.decode("latin-1").strip().lower():
                if self.cors is None or not (self.any_origin or o in self.origins):
                    return await self.refuse(Forbidden(
                        f"Origin: {o[:100]!r} may not call this server from a browser: add it to "
                        "AUDIOROUTER_CORS_ORIGINS to allow it", code="origin_not_allowed",
                        param="Origin"), scope, receive, send)
                app = self.cors  # an allowed cross-origin call: CORS headers, and the preflight answered
        if scope["method"] in ("POST", "PUT", "PATCH") and (path.startswith(("/api/", "/v1/"))):
            media = ctype.split(b";", 1)[0].strip().lower() if ctype else b""
            upload = path.endswith(UPLOAD_SUFFIXES)
            if media != b"application/json" and not (upload and media == b"multipart/form-data"):
                form = " or multipart/form-data" if upload else ""
                shown = ctype.decode("latin-1")[:100] if ctype else "(none)"
                cors = {"Access-Control-Allow-Origin": (origin or b"").decode("latin-1"), "Vary": "Origin"} \
                    if app is self.cors else None  # an allowed page may read why
                return await self.refuse(InvalidRequest(
                    f"Content-Type: {shown!r} is not supported here; send application/json{form}",
                    status=415, code="unsupported_media_type", param="Content-Type", headers=cors),
                    scope, receive, send)
        await app(scope, receive, send)

    async def refuse(self, err: GatewayError, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(err, scope["path"])(scope, receive, send)
