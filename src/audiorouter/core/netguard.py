"""Which network addresses the gateway may connect to on a caller's behalf (input_audio.url, webhooks): only
public internet addresses unless the operator allows more (AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE,
AUDIOROUTER_URL_FETCH_ALLOW_HOSTS). The callers resolve a name once, check every address it has, and connect to
the address they checked."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

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
