"""Shared plumbing for adapters that talk HTTP to an upstream: one pooled httpx client per provider and
one mapping from upstream failures to neutral errors (which the router retries or falls back on)."""
from __future__ import annotations

from typing import Any, AsyncIterator

import httpx

from ..core.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from .base import ProviderAdapter
from .fasthttp import FastTransport

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def retry_after_seconds(resp: httpx.Response) -> float | None:
    v = resp.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


def upstream_message(resp: httpx.Response) -> str:
    """The provider's own error text, whatever its envelope, trimmed; never echoes request headers."""
    try:
        body: Any = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for k in ("message", "detail", "err_msg", "error"):
                if isinstance(err.get(k), str):
                    return err[k][:300]
            if isinstance(err.get("detail"), dict) and isinstance(err["detail"].get("message"), str):
                return err["detail"]["message"][:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(body.get("detail"), (str, dict, list)):
            return str(body["detail"])[:300]
    return str(body)[:300]


def raise_for_upstream(provider: str, resp: httpx.Response) -> None:
    """Map a non-2xx upstream answer to an error. 4xx other than 408/409/425/429 are the client's fault
    (retrying elsewhere would fail the same way) except 401/403/404, which are ours (bad key, model
    retired upstream) and another provider may well succeed."""
    if resp.is_success:
        return
    status = resp.status_code
    msg = f"{provider}: upstream answered {status}: {upstream_message(resp)}"
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

    @property
    def base_url(self) -> str:
        return (self.spec.base_url or "").rstrip("/")

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s))
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
            # plain-http upstreams take the lean transport (providers/fasthttp.py); https keeps httpx's own
            self._client = httpx.AsyncClient(timeout=timeout, transport=FastTransport(
                httpx.AsyncHTTPTransport(limits=limits)))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---- shared request plumbing (adapters override the hooks for their provider's envelope) ----------
    def transport_error(self, e: httpx.HTTPError) -> UpstreamError:
        return map_transport_error(self.slug, e)

    def upstream_error(self, resp: httpx.Response) -> GatewayError:
        """The error a non-2xx answer maps to."""
        try:
            raise_for_upstream(self.slug, resp)
        except GatewayError as e:
            return e
        return UpstreamError(f"{self.slug}: unexpected upstream answer {resp.status_code}", retryable=True,
                             metadata={"provider_name": self.slug})

    def _malformed(self, why: str) -> UpstreamError:
        return UpstreamError(f"{self.slug}: malformed upstream response ({why})", retryable=True,
                             metadata={"provider_name": self.slug})

    async def post_checked(self, url: str, **kw: Any) -> httpx.Response:
        """POST and read the whole answer; a transport failure or a non-2xx raises the mapped error."""
        try:
            resp = await self.client.post(url, **kw)
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        if not resp.is_success:
            raise self.upstream_error(resp)
        return resp

    async def open_audio_stream(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response with its body unread. A non-2xx is read (for its error
        text), closed and raised as upstream_error; a transport failure at either step as transport_error;
        a 2xx that is not audio (audio/* or application/octet-stream) is closed and raised as malformed."""
        try:
            resp = await self.client.send(request, stream=True)
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
        ctype = resp.headers.get("content-type", "").lower()
        if not (ctype.startswith("audio/") or ctype.startswith("application/octet-stream")):
            await resp.aclose()
            raise self._malformed(f"expected audio, got Content-Type {ctype or 'none'!r}")
        return resp

    async def drain(self, resp: httpx.Response, *, require_audio: bool = True) -> AsyncIterator[bytes]:
        """The non-empty chunks of a streamed body, closing it at the end; with require_audio, a body that
        carried no bytes at all is malformed."""
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
            raise self._malformed("empty audio")
