"""Shared plumbing for adapters that talk HTTP to an upstream: one pooled client per provider
(providers/upstream_client.py: the same client for http and https) and one mapping from upstream failures to
neutral errors (which the router retries or falls back on)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from ..core import metrics
from ..core.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from ..core.text import redact
from . import upstream_client
from .base import ProviderAdapter
from .upstream_client import UpstreamResponse

# An upstream's answer, as the helpers below read it: ours (upstream_client.py) or one of httpx's (tests, fakes)
Response = httpx.Response | UpstreamResponse

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def retry_after_seconds(resp: Response) -> float | None:
    v = resp.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


MESSAGE_CHARS = 300  # of the upstream's own error text passed on


def upstream_message(resp: Response, secrets: Iterable[str | None] = ()) -> str:
    """The provider's own error text, whatever its envelope, with `secrets` scrubbed out and then cut to
    MESSAGE_CHARS (in that order: a cut first could leave part of a key behind); never echoes request
    headers."""
    return redact(_upstream_text(resp), secrets, MESSAGE_CHARS)


def _upstream_text(resp: Response) -> str:
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


def raise_for_upstream(provider: str, resp: Response, secrets: Iterable[str | None] = ()) -> None:
    """Map a non-2xx upstream answer to an error. 4xx other than 408/409/425/429 are the client's fault
    (retrying elsewhere would fail the same way) except 401/403/404, which are ours (bad key, model
    retired upstream) and another provider may well succeed. `secrets` never reach the message."""
    if resp.is_success:
        return
    status = resp.status_code
    msg = f"{provider}: upstream answered {status}: {upstream_message(resp, secrets)}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise UpstreamError(msg, retryable=True, upstream_status=status, retry_after=retry_after_seconds(resp),
                            status=502 if status != 429 else 429,
                            metadata={"provider_name": provider, "upstream_status": status})
    if status in (401, 403, 404, 402):
        raise UpstreamError(msg, retryable=True, upstream_status=status, status=502,
                            metadata={"provider_name": provider, "upstream_status": status})
    raise InvalidRequest(msg, status=400 if status != 413 else 413,
                         metadata={"provider_name": provider, "upstream_status": status})


def map_transport_error(provider: str, e: httpx.HTTPError) -> UpstreamError:
    if isinstance(e, httpx.DecodingError):  # the answer arrived but cannot be read (e.g. a line without end)
        return UpstreamError(f"{provider}: malformed upstream reply ({e})", retryable=True,
                             metadata={"provider_name": provider, "reason": "malformed_reply"})
    if isinstance(e, httpx.TimeoutException):
        return UpstreamTimeout(f"{provider}: upstream timed out ({e.__class__.__name__})", retryable=True,
                               metadata={"provider_name": provider})
    return UpstreamError(f"{provider}: could not reach upstream ({e.__class__.__name__})", retryable=True,
                         metadata={"provider_name": provider})


class HTTPProvider(ProviderAdapter):
    """An adapter with a pooled upstream client created on first use and closed at shutdown."""

    def __init__(self, slug, spec, settings):
        super().__init__(slug, spec, settings)
        self._client: Any = None

    @property
    def base_url(self) -> str:
        return (self.spec.base_url or "").rstrip("/")

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s))

    @property
    def client(self) -> Any:
        """The upstream client (pyreqwest; providers/upstream_client.py), one per adapter: its keep-alive pool
        and TLS sessions are per upstream host."""
        if self._client is None:
            self._client = upstream_client.build_client(self.spec.timeout_s, min(10.0, self.spec.timeout_s))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
            # let the client's runtime threads finish with the Python objects they still hold: exiting the
            # interpreter right after a close (shutdown) while they did aborted the process (pyreqwest 0.15)
            await asyncio.sleep(upstream_client.CLOSE_GRACE_S)

    async def send(self, method: str, url: str, *, params: Any = None, json: Any = None, content: Any = None,
                   data: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, stream: bool = False) -> UpstreamResponse:
        """One upstream exchange, with httpx.AsyncClient.request's arguments (bodies: bytes, str, JSON, form
        fields, files as (filename, bytes, content type)). Transport failures raise httpx errors; the body is
        read unless `stream`."""
        ctype, parts = upstream_client.encode_body(json, content, data, files)
        if params:
            url = str(httpx.URL(url, params=params))
        return await upstream_client.request(self.client, method, url, headers, ctype, parts, stream)

    # ---- shared request plumbing (adapters override the hooks for their provider's envelope) ----------
    def transport_error(self, e: httpx.HTTPError) -> UpstreamError:
        return self.scrubbed(map_transport_error(self.slug, e))  # type: ignore[return-value]

    def upstream_error(self, resp: Response) -> GatewayError:
        """The error a non-2xx answer maps to: raise_for_upstream's, refined by the adapter's
        refine_upstream_error, then scrubbed of secrets. Adapters override the hook, not this."""
        try:
            raise_for_upstream(self.slug, resp, self.secrets())
        except GatewayError as e:
            return self.scrubbed(self.refine_upstream_error(e, resp))
        return UpstreamError(f"{self.slug}: unexpected upstream answer {resp.status_code}", retryable=True,
                             metadata={"provider_name": self.slug})

    def refine_upstream_error(self, e: GatewayError, resp: Response) -> GatewayError:
        """Hook: what the provider's own error envelope adds to the mapped error `e` (an upstream code, a
        better message, another error class). The result is scrubbed afterwards."""
        return e

    def _malformed(self, why: str) -> UpstreamError:
        return UpstreamError(f"{self.slug}: malformed upstream response ({why})", retryable=True,
                             metadata={"provider_name": self.slug})

    def _failed_attempt(self, e: httpx.HTTPError, t0: float) -> None:
        outcome = ("timeout" if isinstance(e, httpx.TimeoutException) else
                   "connect_error" if isinstance(e, httpx.ConnectError) else "transport_error")
        metrics.upstream_attempt(self.slug, outcome, time.perf_counter() - t0)

    async def post_checked(self, url: str, **kw: Any) -> UpstreamResponse:
        """POST and read the whole answer; a transport failure or a non-2xx raises the mapped error."""
        t0 = time.perf_counter()
        try:
            resp = await self.send("POST", url, **kw)
        except httpx.HTTPError as e:
            self._failed_attempt(e, t0)
            raise self.transport_error(e) from None
        metrics.upstream_attempt(self.slug, metrics.outcome_of_status(resp.status_code), time.perf_counter() - t0)
        if not resp.is_success:
            raise self.upstream_error(resp)
        return resp

    async def open_checked(self, url: str, **kw: Any) -> UpstreamResponse:
        """POST and return the response with its body unread. A non-2xx is read (for its error text), closed
        and raised as upstream_error; a transport failure at either step as transport_error."""
        t0 = time.perf_counter()
        try:
            resp = await self.send("POST", url, stream=True, **kw)
        except httpx.HTTPError as e:
            self._failed_attempt(e, t0)
            raise self.transport_error(e) from None
        metrics.upstream_attempt(self.slug, metrics.outcome_of_status(resp.status_code), time.perf_counter() - t0)
        if not resp.is_success:
            try:
                await resp.aread()
            except httpx.HTTPError as e:
                raise self.transport_error(e) from None
            finally:
                await resp.aclose()
            raise self.upstream_error(resp)
        return resp

    async def open_audio_stream(self, url: str, **kw: Any) -> UpstreamResponse:
        """open_checked, and a 2xx that is not audio (audio/* or application/octet-stream) is closed and
        raised as malformed."""
        resp = await self.open_checked(url, **kw)
        ctype = resp.headers.get("content-type", "").lower()
        if not (ctype.startswith(("audio/", "application/octet-stream"))):
            await resp.aclose()
            raise self._malformed(f"expected audio, got Content-Type {ctype or 'none'!r}")
        return resp

    async def drain(self, resp: Response, *, require_audio: bool = True,
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
