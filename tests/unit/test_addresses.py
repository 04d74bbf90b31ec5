"""Which addresses jobhook may fetch an outsider's image URL from (service.domain.addresses): a table."""

from __future__ import annotations

import pytest

from service.domain.addresses import Verdict, judge, parse_networks

# address → (allowed with no allow-list, the reason)
TABLE: dict[str, tuple[bool, str]] = {
    # IPv4
    "0.0.0.0": (False, "unspecified"),
    "0.1.2.3": (False, "unspecified"),
    "10.0.0.1": (False, "private"),
    "100.64.0.1": (False, "shared (carrier-grade NAT)"),
    "100.127.255.254": (False, "shared (carrier-grade NAT)"),
    "127.0.0.1": (False, "loopback"),
    "127.255.255.254": (False, "loopback"),
    "169.254.169.254": (False, "link-local"),  # the cloud metadata service
    "172.16.0.1": (False, "private"),
    "172.31.255.255": (False, "private"),
    "192.0.0.8": (False, "reserved"),
    "192.0.2.1": (False, "reserved"),
    "192.168.1.1": (False, "private"),
    "198.18.0.1": (False, "reserved"),
    "198.51.100.7": (False, "reserved"),
    "203.0.113.9": (False, "reserved"),
    "224.0.0.1": (False, "multicast"),
    "239.255.255.250": (False, "multicast"),
    "240.0.0.1": (False, "reserved"),
    "255.255.255.255": (False, "reserved"),
    "8.8.8.8": (True, "public"),
    "1.1.1.1": (True, "public"),
    "100.63.255.255": (True, "public"),  # just below CGNAT
    "100.128.0.0": (True, "public"),  # just above
    "172.15.255.255": (True, "public"),
    "172.32.0.0": (True, "public"),
    "151.101.1.69": (True, "public"),
    # IPv6
    "::": (False, "unspecified"),
    "::1": (False, "loopback"),
    "fe80::1": (False, "link-local"),
    "fe80::1%eth0": (False, "link-local"),
    "fc00::1": (False, "private"),
    "fd12:3456::1": (False, "private"),
    "fec0::1": (False, "private"),
    "ff02::1": (False, "multicast"),
    "2001:db8::1": (False, "reserved"),
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": (False, "reserved"),  # Teredo
    "100::1": (False, "reserved"),  # discard-only
    "4000::1": (False, "reserved"),  # outside global unicast
    "::127.0.0.1": (False, "reserved"),  # IPv4-compatible: deprecated
    "2606:4700:4700::1111": (True, "public"),
    "2a00:1450:4001:81b::200e": (True, "public"),
    # IPv6 that leads to IPv4: judged as that IPv4 address
    "::ffff:127.0.0.1": (False, "loopback"),
    "::ffff:10.0.0.1": (False, "private"),
    "::ffff:169.254.169.254": (False, "link-local"),
    "::ffff:0.0.0.0": (False, "unspecified"),
    "::ffff:8.8.8.8": (True, "public"),
    "2002:7f00:1::1": (False, "loopback"),  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1": (False, "private"),  # 6to4 of 192.168.1.1
    "2002:808:808::1": (True, "public"),  # 6to4 of 8.8.8.8
    "64:ff9b::a00:1": (False, "private"),  # NAT64 of 10.0.0.1
    "64:ff9b::808:808": (True, "public"),  # NAT64 of 8.8.8.8
    # not addresses at all
    "localhost": (False, "not an IP address"),
    "": (False, "not an IP address"),
}


@pytest.mark.parametrize(("address", "expected"), TABLE.items(), ids=list(TABLE))
def test_only_public_unicast_addresses_are_allowed_by_default(address: str, expected: tuple[bool, str]) -> None:
    assert judge(address) == Verdict(*expected)


ALLOW = parse_networks("127.0.0.0/8, 10.1.0.0/16, fd00::/8")

# address → allowed with ALLOW
WITH_ALLOW_LIST: dict[str, bool] = {
    "127.0.0.1": True,
    "127.9.9.9": True,
    "::ffff:127.0.0.1": True,  # the IPv4 network covers its IPv4-mapped spelling
    "10.1.2.3": True,
    "10.2.0.1": False,  # 10/8 is not opened whole
    "fd00::5": True,
    "fc00::5": False,
    "::1": False,  # IPv6 loopback is another network
    "169.254.169.254": False,
    "8.8.8.8": True,  # public stays allowed
}


@pytest.mark.parametrize(("address", "allowed"), WITH_ALLOW_LIST.items(), ids=list(WITH_ALLOW_LIST))
def test_the_allow_list_opens_exactly_its_networks(address: str, allowed: bool) -> None:
    verdict = judge(address, ALLOW)
    assert verdict.allowed is allowed
    if allowed and not judge(address).allowed:
        assert verdict.reason == "allow-listed"


@pytest.mark.parametrize("text", ["", "127.0.0.0/33", "10.0.0.1/8", "localhost", "127.0.0.0/8,", "fe80::/10%eth0"])
def test_parse_networks_refuses_what_is_not_a_network(text: str) -> None:
    with pytest.raises(ValueError):
        parse_networks(text)
