"""IPv6 ranges that embed or reach an IPv4 address are judged by the address they reach:
a public-looking IPv6 literal must never be a way to the metadata service or the LAN."""

from __future__ import annotations

import pytest

from mailproxy.domain.egress import address_allowed, parse_networks


@pytest.mark.parametrize(
    "address",
    [
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254 (cloud metadata)
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::",  # 6to4 of 192.168.1.1
        "2002:0a00:0001:ffff::1",  # 6to4 of 10.0.0.1, any subnet and host part
        "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::808:808",  # NAT64 local-use prefix: where the IPv4 sits is unknown
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001::1",  # Teredo prefix
        "::a9fe:a9fe",  # IPv4-compatible (deprecated) 169.254.169.254
        "::808:808",  # IPv4-compatible, even of a public address
        "2606:4700::5efe:a9fe:a9fe",  # ISATAP identifier of 169.254.169.254
        "2606:4700::200:5efe:a00:1",  # ISATAP (universal bit) of 10.0.0.1
        "::ffff:169.254.169.254",  # IPv4-mapped
        "fec0::1",  # site-local (deprecated; Python calls it global)
    ],
)
def test_ipv6_carriers_of_non_public_ipv4_are_refused(address):
    assert not address_allowed(address)


@pytest.mark.parametrize(
    "address",
    [
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2606:4700::5efe:808:808",  # ISATAP of 8.8.8.8
        "2606:4700::1111",  # an ordinary public address
    ],
)
def test_ipv6_carriers_of_public_ipv4_are_allowed(address):
    assert address_allowed(address)


def test_an_allowed_ipv4_network_admits_its_ipv6_carriers():
    allow = parse_networks("10.0.0.0/8")
    assert address_allowed("2002:a00:1::", allow)
    assert address_allowed("64:ff9b::a00:1", allow)
    assert not address_allowed("2002:c0a8:101::", allow)


def test_an_allowed_ipv6_network_admits_opaque_carriers_inside_it():
    assert address_allowed("2001:0:4136:e378::1", parse_networks("2001::/32"))
