"""Which network addresses the gateway may connect to on a caller's behalf (input_audio.url, webhooks): only
public internet addresses unless the operator allows more (AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE,
AUDIOROUTER_URL_FETCH_ALLOW_HOSTS). The callers resolve a name once, check every address it has, and connect to
the address they checked."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=16)
def allowed_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in spec.split(","):
        item = item.strip()
        if item:
            nets.append(ipaddress.ip_network(item, strict=False))
    return tuple(nets)


# IANA special-purpose ranges (iana-ipv4/ipv6-special-registry) that are not globally reachable, beyond what
# this Python's is_global already knows (older ones miss some), and ranges deprecated for use
_NOT_GLOBAL = {
    "site-local": ipaddress.ip_network("fec0::/10"),        # RFC 3879: deprecated, routed like private
    "documentation": ipaddress.ip_network("3fff::/20"),     # RFC 9637
    "local NAT64": ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215: translates to private networks
    "SRv6 SID": ipaddress.ip_network("5f00::/16"),          # RFC 9602
    "6to4 relay": ipaddress.ip_network("192.88.99.0/24"),   # RFC 7526: deprecated anycast
    "IETF protocol": ipaddress.ip_network("192.0.0.0/24"),  # RFC 6890 (but for the two below)
}
_GLOBAL_EXCEPTIONS = {ipaddress.ip_address("192.0.0.9"), ipaddress.ip_address("192.0.0.10")}  # PCP, TURN anycast
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped, NAT64 (well-known prefix), 6to4, Teredo."""
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address is not a public internet address (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            why = blocked_reason(embedded)
            if why or ip.teredo is None:  # mapped, NAT64, 6to4: the IPv4 address reached decides
                return why
    if ip in _GLOBAL_EXCEPTIONS:
        return None
    for why, net in _NOT_GLOBAL.items():
        if ip.version == net.version and ip in net:
            return why
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None



def refusal(ip: IPAddress, settings: Any) -> str | None:
    """Why the gateway must not connect to `ip` under `settings`, or None when it may."""
    why = blocked_reason(ip)
    if why is None or settings.url_fetch_allow_private:
        return None
    if any(ip in net for net in allowed_networks(settings.url_fetch_allow_hosts or "")):
        return None
    return why


class BadURL(ValueError):
    """A URL the gateway will not call (message says why; `code` for the dialect's error envelope)."""

    def __init__(self, message: str, code: str = "invalid_url"):
        super().__init__(message)
        self.code = code


def split_http_url(url: str, max_len: int, credentials_hint: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host and no user:password@, or BadURL."""
    if len(url) > max_len:
        raise BadURL(f"the URL is longer than {max_len} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise BadURL(f"not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadURL(f"only http and https URLs are called, not {scheme or 'a URL without a scheme'!r}",
                     code="unsupported_url_scheme")
    if not parts.hostname:
        raise BadURL("the URL has no host")
    if parts.username or parts.password:
        raise BadURL(f"URLs with user:password@ are not called; {credentials_hint}")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` has (an IP literal is its own), in order, without duplicates; BadURL when none."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise BadURL(f"could not resolve host {host!r} ({e})", code="url_fetch_failed") from None
    addrs: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addrs:
                addrs.append(ip)
    if not addrs:
        raise BadURL(f"host {host!r} has no address", code="url_fetch_failed")
    return addrs
