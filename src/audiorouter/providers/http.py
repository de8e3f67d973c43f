"""Shared plumbing for adapters that talk HTTP to an upstream: one pooled httpx client per provider and
one mapping from upstream failures to neutral errors (which the router retries or falls back on)."""
from __future__ import annotations

from typing import Any

import httpx

from ..core.errors import InvalidRequest, UpstreamError, UpstreamTimeout
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
