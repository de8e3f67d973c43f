"""Webhooks of batch jobs: signed POSTs to the caller's URL, under the same address rules as input_audio.url.

Signature (docs/deployment.md, "Batch jobs"): header `Webhook-Signature: t=<unix seconds>,v1=<hex>` where hex is
HMAC-SHA256(secret, f"{t}." + body). The receiver recomputes it over the raw body, compares in constant time
and refuses timestamps older than a few minutes (replays). `Webhook-Id` is the same on every delivery of one
event (deduplicate on it: delivery is at least once)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..core.netguard import BadURL, refusal, resolve_host, split_http_url

# seconds after each failed delivery; the last step repeats until AUDIOROUTER_WEBHOOK_RETRY_WINDOW_S
BACKOFF_S = (10, 30, 60, 300, 900, 1800, 3600)


class WebhookURLError(ValueError):
    """The URL may not be used (message names why; `status` 400 for a malformed URL, 403 for a refused address)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """The receiver's check (also what the documentation's snippet does)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def next_delay(attempts: int) -> float:
    return float(BACKOFF_S[min(max(attempts, 1), len(BACKOFF_S)) - 1])


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable webhook URL, or WebhookURLError."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookURLError("must be an http or https URL")
    try:
        return split_http_url(url, 2048, "sign with webhook.secret instead")
    except BadURL as e:
        raise WebhookURLError(str(e)) from None


async def resolve_checked(url: str, settings: Any) -> tuple[str, str, list[Any]]:
    """Resolve the URL's host; every address must be allowed (the same rules as input_audio.url)."""
    scheme, host, port = check_url(url)
    try:
        addrs = await resolve_host(host, port)
    except BadURL as e:
        raise WebhookURLError(str(e)) from None
    for ip in addrs:
        why = refusal(ip, settings)
        if why is not None:
            raise WebhookURLError(f"refusing to call {host} ({ip} is a {why} address); only public addresses are "
                                  "called unless the operator sets AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE=true",
                                  status=403)
    return scheme, host, addrs


async def post(url: str, body: bytes, secret: str, event_id: str, settings: Any) -> str | None:
    """One delivery; None on a 2xx answer, else why it failed (no redirects are followed)."""
    try:
        scheme, host, addrs = await resolve_checked(url, settings)
    except WebhookURLError as e:
        return f"webhook.url {e}"
    parts = urlsplit(url.strip())
    ip = addrs[0]
    netloc_ip = f"[{ip}]" if ip.version == 6 else str(ip)
    pinned = urlunsplit((parts.scheme, f"{netloc_ip}:{parts.port}" if parts.port else netloc_ip,
                         parts.path or "/", parts.query, ""))
    host_header = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    ts = int(time.time())
    headers = {"Host": host_header, "Content-Type": "application/json", "User-Agent": "audiorouter-webhooks",
               "Webhook-Id": event_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sign(secret, ts, body)}
    timeout = float(settings.webhook_timeout_s)
    ext = {"sni_hostname": host} if scheme == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False) as c:
            resp = await c.send(c.build_request("POST", pinned, content=body, headers=headers, extensions=ext))
            await resp.aclose()
    except httpx.HTTPError as e:
        return f"{type(e).__name__}"
    if 200 <= resp.status_code < 300:
        return None
    return f"HTTP {resp.status_code}"
