"""input_audio.url: the gateway fetches the audio itself. Only http and https; the host name is resolved here and
every address it resolves to must be public (loopback, private, link-local, site-local, CGNAT, multicast,
documentation and reserved ranges of IANA's special-purpose registries, also as the IPv4 address an IPv6 one
carries - mapped, NAT64, 6to4, Teredo - are refused unless the operator allows them with
AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE=true or lists them in AUDIOROUTER_URL_FETCH_ALLOW_HOSTS); the connection then
goes to the address that was checked (so a second DNS answer cannot point it elsewhere), with the original name
as Host header and TLS server name. Redirects are followed by hand, each hop checked the same way. The body is
capped in size (AUDIOROUTER_URL_FETCH_MAX_BYTES, default the request body limit) and the whole fetch in time
(AUDIOROUTER_URL_FETCH_TIMEOUT_S). Every failure is a 4xx naming input_audio.url."""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from ..audio.sniff import canonical, known
from ..core.errors import InvalidRequest, PayloadTooLarge
from ..core.netguard import (  # noqa: F401 (re-exported)
    BadURL,
    IPAddress,
    blocked_reason,
    embedded_ipv4,
    refusal,
    resolve_host,
    split_http_url,
)

FIELD = "input_audio.url"


def _refuse(message: str, code: str = "invalid_url", status: int = 400, **meta: Any) -> InvalidRequest:
    return InvalidRequest(f"{FIELD}: {message}", param=FIELD, code=code, status=status, metadata=meta or None)


def check_address(ip: IPAddress, host: str, settings: Any) -> None:
    why = refusal(ip, settings)
    if why is None:
        return
    raise _refuse(f"refusing to fetch from {host} ({ip} is a {why} address); the server fetches only public "
                  "addresses unless its operator sets AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE=true",
                  code="url_not_allowed", status=403, address=str(ip), reason=why)


def _parse(url: str) -> tuple[str, str, int]:
    try:
        return split_http_url(url, 8192, "use a pre-signed URL instead")
    except BadURL as e:
        raise _refuse(str(e), code=e.code) from None


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return await resolve_host(host, port)
    except BadURL as e:
        raise _refuse(str(e), code=e.code) from None


def _pinned_url(url: str, ip: IPAddress) -> str:
    parts = urlsplit(url)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def format_hint(url: str, content_type: str | None) -> str | None:
    """The audio format the URL's extension or Content-Type names, if any (the bytes decide in the end)."""
    path = urlsplit(url).path
    if "." in path.rsplit("/", 1)[-1]:
        ext = canonical(path.rsplit(".", 1)[-1])
        if known(ext):
            return ext
    ct = canonical(content_type) if content_type else None
    return ct if known(ct) else None


async def fetch_audio(url: str, settings: Any) -> tuple[bytes, str | None]:
    """The bytes at `url` and a format hint, or a 4xx naming input_audio.url."""
    if not getattr(settings, "url_fetch", True):
        raise _refuse("URL input is disabled on this server (AUDIOROUTER_URL_FETCH=false); send input_audio.data",
                      code="url_input_disabled")
    limit = int(settings.url_fetch_max_bytes or settings.max_body_bytes)
    timeout = float(settings.url_fetch_timeout_s)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, settings, limit, timeout)
    except TimeoutError:
        raise _refuse(f"fetching the URL took longer than {timeout:g} s", code="url_fetch_timeout",
                      status=408) from None


async def _fetch(url: str, settings: Any, limit: int, timeout: float) -> tuple[bytes, str | None]:
    t = httpx.Timeout(timeout, connect=min(10.0, timeout))
    async with httpx.AsyncClient(timeout=t, follow_redirects=False, trust_env=False) as client:
        current = url
        for _hop in range(int(settings.url_fetch_max_redirects) + 1):
            scheme, host, port = _parse(current)
            addrs = await resolve(host, port)
            for ip in addrs:  # every address the name has must be allowed, not just the one we use
                check_address(ip, host, settings)
            ext = {"sni_hostname": host} if scheme == "https" else {}
            request = client.build_request("GET", _pinned_url(current, addrs[0]),
                                           headers={"Host": _host_header(current), "Accept": "audio/*, */*",
                                                    "Accept-Encoding": "identity", "User-Agent": "audiorouter"},
                                           extensions=ext)
            try:
                resp = await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise _refuse(f"fetching the URL timed out ({timeout:g} s)", code="url_fetch_timeout",
                              status=408) from None
            except httpx.HTTPError as e:
                raise _refuse(f"could not fetch the URL ({e.__class__.__name__}: {e})",
                              code="url_fetch_failed") from None
            try:
                if resp.status_code in (301, 302, 303, 307, 308):
                    location = resp.headers.get("location")
                    if not location:
                        raise _refuse(f"the URL answered {resp.status_code} without a Location",
                                      code="url_fetch_failed")
                    current = urljoin(current, location)
                    continue
                if not resp.is_success:
                    raise _refuse(f"fetching the URL answered HTTP {resp.status_code}", code="url_fetch_failed",
                                  upstream_status=resp.status_code)
                data = await _read_capped(resp, limit)
                return data, format_hint(current, resp.headers.get("content-type"))
            finally:
                await resp.aclose()
        raise _refuse(f"more than {settings.url_fetch_max_redirects} redirects", code="url_fetch_failed")


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    cl = resp.headers.get("content-length")
    if cl and cl.strip().isdigit() and int(cl) > limit:
        raise PayloadTooLarge(f"{FIELD}: the file is {int(cl)} bytes; the limit is {limit} bytes", param=FIELD,
                              metadata={"limit": limit}, code="url_too_large")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"{FIELD}: the file exceeds the limit of {limit} bytes", param=FIELD,
                                      metadata={"limit": limit}, code="url_too_large")
            parts.append(chunk)
    except httpx.TimeoutException:
        raise _refuse("fetching the URL timed out while reading the body", code="url_fetch_timeout",
                      status=408) from None
    except httpx.HTTPError as e:
        raise _refuse(f"the download failed ({e.__class__.__name__})", code="url_fetch_failed") from None
    data = b"".join(parts)
    if not data:
        raise _refuse("the URL returned no data", code="url_fetch_failed")
    return data
