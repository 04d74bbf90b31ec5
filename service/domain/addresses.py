"""May jobhook connect to this address to fetch what an outsider named? Pure: no I/O, no DNS.

Image URLs come from providers' callbacks and polls, so whoever can send those names the address
jobhook connects to. Only public unicast addresses are allowed, unless JOBHOOK_MIRROR_ALLOW_NETWORKS
opens an exception. The ranges are written out (from IANA's special-purpose registries) rather than
taken from `ipaddress`'s `is_private`/`is_global`, whose answers changed between Python releases and
count multicast as global.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_V4("192.0.2.0/24"), "reserved"),  # documentation
    (_V4("192.88.99.0/24"), "reserved"),  # 6to4 relay anycast
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved"),  # benchmarking
    (_V4("198.51.100.0/24"), "reserved"),  # documentation
    (_V4("203.0.113.0/24"), "reserved"),  # documentation
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),  # including the broadcast address
)

# Only global unicast (2000::/3) is public at all; within it, these are not.
GLOBAL_UNICAST_V6 = _V6("2000::/3")
REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fc00::/7"), "private"),  # unique local
    (_V6("fec0::/10"), "private"),  # site-local, deprecated
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001::/23"), "reserved"),  # IETF protocol assignments, Teredo among them
    (_V6("2001:db8::/32"), "reserved"),  # documentation
    (_V6("3fff::/20"), "reserved"),  # documentation
)
# IPv6 addresses that lead to an IPv4 address (with ::ffff:0:0/96 and 2002::/16, which `ipaddress`
# knows): judged by the IPv4 address. IPv4-compatible addresses (::a.b.c.d) are deprecated and refused.
NAT64 = _V6("64:ff9b::/96")


@dataclasses.dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # "public", "allow-listed", or the kind of range that refused it ("loopback", …)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped, 6to4 or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def judge(address: IPAddress | str, allow: Iterable[IPNetwork] = ()) -> Verdict:
    """May jobhook connect to `address`? `allow`: the networks JOBHOOK_MIRROR_ALLOW_NETWORKS opens.

    An address that stands for an IPv4 one (`::ffff:127.0.0.1`, 6to4, NAT64) is judged as that
    IPv4 address too, so that no spelling reaches what the plain one may not.
    """
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return Verdict(False, "not an IP address")
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(address.compressed.partition("%")[0])
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    networks = tuple(allow)
    if any(candidate in network for network in networks for candidate in (address, inner) if candidate is not None):
        return Verdict(True, "allow-listed")
    if inner is not None:
        # 6to4 and NAT64 prefixes are public in themselves: the address they lead to decides.
        verdict = judge(inner)
        return verdict if not verdict.allowed else Verdict(True, "public")
    if isinstance(address, ipaddress.IPv4Address):
        for network, kind in REFUSED_V4:
            if address in network:
                return Verdict(False, kind)
        return Verdict(True, "public")
    for network6, kind in REFUSED_V6:
        if address in network6:
            return Verdict(False, kind)
    if address not in GLOBAL_UNICAST_V6:
        return Verdict(False, "reserved")
    return Verdict(True, "public")


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8, fd00::/8` → networks. Raises ValueError naming the entry that is not a network."""
    networks: list[IPNetwork] = []
    for part in text.split(","):
        entry = part.strip()
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError:
            raise ValueError(entry) from None
    return tuple(networks)
