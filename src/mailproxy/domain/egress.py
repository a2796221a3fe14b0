"""Where mailproxy may connect on a client's or tenant's behalf (callback and attachment
URLs): public addresses only, unless the operator allows a network.

The proxy is an SSRF engine by design: it POSTs to configured callback URLs and fetches
message-supplied URLs. The rule checks *resolved* addresses (string checks on host names
are worthless: ``2130706433`` and ``0x7f000001`` resolve to 127.0.0.1), unwraps
IPv4-mapped IPv6 addresses first (``::ffff:127.0.0.1`` is not "loopback" to Python 3.11),
and requires ``is_global`` (which also refuses CGNAT space and the cloud metadata address,
both missed by an ``is_private`` deny-list).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from mailproxy.domain.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str | None) -> tuple[Network, ...]:
    """The operator's allow-list: comma-separated CIDRs (``security.egress_allow``)."""
    if not spec:
        return ()
    networks = []
    for part in spec.split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise InvalidInput(
                "security.egress_allow", f"invalid security.egress_allow: {text!r} is not a CIDR"
            ) from None
    return tuple(networks)


def address_allowed(address: str, allow: Sequence[Network] = ()) -> bool:
    """May mailproxy connect to ``address`` (an IP as ``getaddrinfo`` returns it)?"""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allow):
        return True
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check_http_url(field: str, url: str) -> str:
    """Syntax of a URL mailproxy will call (a callback base, an attachment URL): http(s),
    a host, a valid port, no credentials in it. Its addresses are checked at each call
    (they may change, and the operator may allow a network later)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(field, f"invalid {field}: http or https URL expected")
    if not parts.hostname:
        raise InvalidInput(field, f"invalid {field}: no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(field, f"invalid {field}: no credentials in the URL")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise InvalidInput(field, f"invalid {field}: bad port") from None
    return url
