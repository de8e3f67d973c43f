"""Shared plumbing for adapters that talk HTTP to an upstream: one pooled httpx client per provider and
one mapping from upstream failures to neutral errors (which the router retries or falls back on)."""
from __future__ import annotations

import functools
from typing import Any, AsyncIterator, Iterable

import httpx

from ..core.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from ..core.text import redact
from .base import ProviderAdapter
from .fasthttp import FastResponse, FastTransport, fast_body
from .fasthttp import enabled as fast_enabled

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def retry_after_seconds(resp: httpx.Response) -> float | None:
    v = resp.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


MESSAGE_CHARS = 300  # of the upstream's own error text passed on


def upstream_message(resp: httpx.Response, secrets: Iterable[str | None] = ()) -> str:
    """The provider's own error text, whatever its envelope, with `secrets` scrubbed out and then cut to
    MESSAGE_CHARS (in that order: a cut first could leave part of a key behind); never echoes request
    headers."""
    return redact(_upstream_text(resp), secrets, MESSAGE_CHARS)


def _upstream_text(resp: httpx.Response) -> str:
    try:
        body: Any = resp.json()
    except ValueError:
        return resp.text
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for k in ("message", "detail", "err_msg", "error"):
                if isinstance(err.get(k), str):
                    return err[k]
            if isinstance(err.get("detail"), dict) and isinstance(err["detail"].get("message"), str):
                return err["detail"]["message"]
        if isinstance(err, str):
            return err
        if isinstance(body.get("detail"), (str, dict, list)):
            return str(body["detail"])
    return str(body)


def raise_for_upstream(provider: str, resp: httpx.Response, secrets: Iterable[str | None] = ()) -> None:
    """Map a non-2xx upstream answer to an error. 4xx other than 408/409/425/429 are the client's fault
    (retrying elsewhere would fail the same way) except 401/403/404, which are ours (bad key, model
    retired upstream) and another provider may well succeed. `secrets` never reach the message."""
    if resp.is_success:
        return
    status = resp.status_code
    msg = f"{provider}: upstream answered {status}: {upstream_message(resp, secrets)}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise UpstreamError(msg, retryable=True, upstream_status=status, retry_after=retry_after_seconds(resp),
                            status=502 if status != 429 else 429, metadata={"provider_name": provider, "upstream_status": status})
    if status in (401, 403, 404, 402):
        raise UpstreamError(msg, retryable=True, upstream_status=status, status=502,
                            metadata={"provider_name": provider, "upstream_status": status})
    raise InvalidRequest(msg, status=400 if status != 413 else 413,
                         metadata={"provider_name": provider, "upstream_status": status})


def map_transport_error(provider: str, e: httpx.HTTPError) -> UpstreamError:
    if isinstance(e, httpx.TimeoutException):
        return UpstreamTimeout(f"{provider}: upstream timed out ({e.__class__.__name__})", retryable=True,
                               metadata={"provider_name": provider})
    return UpstreamError(f"{provider}: could not reach upstream ({e.__class__.__name__})", retryable=True,
                         metadata={"provider_name": provider})


class HTTPProvider(ProviderAdapter):
    """An adapter with a pooled httpx.AsyncClient created on first use and closed at shutdown."""

    def __init__(self, slug, spec, settings):
        super().__init__(slug, spec, settings)
        self._client: httpx.AsyncClient | None = None
        self._transport: FastTransport | None = None
        self._fast = fast_enabled()  # AUDIOROUTER_FAST_HTTP, read once (not from the environment per request)

    @property
    def base_url(self) -> str:
        return (self.spec.base_url or "").rstrip("/")

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s))

    @functools.cached_property
    def _timeouts(self) -> dict[str, float | None]:
        return self.timeout.as_dict()

    @property
    def transport(self) -> FastTransport:
        """The connection pool for plain-http upstreams (providers/fasthttp.py); https goes to httpx's own."""
        if self._transport is None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
            self._transport = FastTransport(httpx.AsyncHTTPTransport(limits=limits))
        return self._transport

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def send(self, method: str, url: str, *, params: Any = None, json: Any = None, content: Any = None,
                   data: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, stream: bool = False) -> httpx.Response | FastResponse:
        """One upstream exchange, with httpx.AsyncClient.request's arguments. Plain-http URLs skip the httpx
        client: the body is encoded here and handed to the socket without copies (`FastResponse`, the same
        reading interface). Transport failures raise httpx errors either way; the body is read unless
        `stream`."""
        body = fast_body(json, content, data, files) if self._fast and url.startswith("http://") else None
        if body is None:
            request = self.client.build_request(method, url, params=params, json=json, content=content, data=data,
                                                files=files, headers=headers)
            return await self.client.send(request, stream=stream)
        raw, parts = body
        raw += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
        if params:
            url = str(httpx.URL(url, params=params))
        resp = await self.transport.request(method, url, raw, parts, self._timeouts)
        if not stream:
            await resp.aread()
        return resp

    # ---- shared request plumbing (adapters override the hooks for their provider's envelope) ----------
    def transport_error(self, e: httpx.HTTPError) -> UpstreamError:
        return self.scrubbed(map_transport_error(self.slug, e))  # type: ignore[return-value]

    def upstream_error(self, resp: httpx.Response) -> GatewayError:
        """The error a non-2xx answer maps to: raise_for_upstream's, refined by the adapter's
        refine_upstream_error, then scrubbed of secrets. Adapters override the hook, not this."""
        try:
            raise_for_upstream(self.slug, resp, self.secrets())
        except GatewayError as e:
            return self.scrubbed(self.refine_upstream_error(e, resp))
        return UpstreamError(f"{self.slug}: unexpected upstream answer {resp.status_code}", retryable=True,
                             metadata={"provider_name": self.slug})

    def refine_upstream_error(self, e: GatewayError, resp: httpx.Response) -> GatewayError:
        """Hook: what the provider's own error envelope adds to the mapped error `e` (an upstream code, a
        better message, another error class). The result is scrubbed afterwards."""
        return e

    def _malformed(self, why: str) -> UpstreamError:
        return UpstreamError(f"{self.slug}: malformed upstream response ({why})", retryable=True,
                             metadata={"provider_name": self.slug})

    async def post_checked(self, url: str, **kw: Any) -> httpx.Response | FastResponse:
        """POST and read the whole answer; a transport failure or a non-2xx raises the mapped error."""
        try:
            resp = await self.send("POST", url, **kw)
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        if not resp.is_success:
            raise self.upstream_error(resp)
        return resp

    async def open_checked(self, url: str, **kw: Any) -> httpx.Response | FastResponse:
        """POST and return the response with its body unread. A non-2xx is read (for its error text), closed
        and raised as upstream_error; a transport failure at either step as transport_error."""
        try:
            resp = await self.send("POST", url, stream=True, **kw)
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        if not resp.is_success:
            try:
                await resp.aread()
            except httpx.HTTPError as e:
                raise self.transport_error(e) from None
            finally:
                await resp.aclose()
            raise self.upstream_error(resp)
        return resp

    async def open_audio_stream(self, url: str, **kw: Any) -> httpx.Response | FastResponse:
        """open_checked, and a 2xx that is not audio (audio/* or application/octet-stream) is closed and
        raised as malformed."""
        resp = await self.open_checked(url, **kw)
        ctype = resp.headers.get("content-type", "").lower()
        if not (ctype.startswith("audio/") or ctype.startswith("application/octet-stream")):
            await resp.aclose()
            raise self._malformed(f"expected audio, got Content-Type {ctype or 'none'!r}")
        return resp

    async def drain(self, resp: httpx.Response, *, require_audio: bool = True,
                    empty_error: GatewayError | None = None) -> AsyncIterator[bytes]:
        """The non-empty chunks of a streamed body, closing it at the end; with require_audio, a body that
        carried no bytes at all raises `empty_error` (default: malformed, "empty audio")."""
        got = False
        try:
            async for b in resp.aiter_bytes():
                if b:
                    got = True
                    yield b
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        finally:
            await resp.aclose()
        if require_audio and not got:
            raise empty_error or self._malformed("empty audio")
