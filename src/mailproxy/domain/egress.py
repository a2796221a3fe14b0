"""Where mailproxy may connect on a client's or tenant's behalf (callback and attachment
URLs): public addresses only, unless the operator allows a network.

The proxy is an SSRF engine by design: it POSTs to configured callback URLs and fetches
message-supplied URLs. The rule checks *resolved* addresses (string checks on host names
are worthless: ``2130706433`` and ``0x7f000001`` resolve to 127.0.0.1), unwraps
IPv4-mapped IPv6 addresses first (``::ffff:127.0.0.1`` is not "loopback" to Python 3.11),
judges IPv6 ranges that embed an IPv4 address (6to4, NAT64, ISATAP) by that address, and
requires ``is_global`` (which also refuses CGNAT space and the cloud metadata address,
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


#: IPv6 ranges that carry an IPv4 address the packet is delivered to (or through):
#: 6to4 (RFC 3056) puts it in bits 16-47, the NAT64 well-known prefix (RFC 6052) in the
#: last 32 bits. ``2002:a9fe:a9fe::`` reaches 169.254.169.254, yet Python calls it global.
_SIXTO4 = ipaddress.IPv6Network("2002::/16")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
#: Ranges refused outright (unless allowed): Teredo (RFC 4380, the client address is
#: obfuscated and the relay is anyone's), the NAT64 local-use prefix (RFC 8215, where the
#: IPv4 address sits is the operator's choice), IPv4-compatible addresses (RFC 4291,
#: deprecated).
_OPAQUE_V4_CARRIERS = (
    ipaddress.IPv6Network("2001::/32"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
)
#: Site-local addresses (RFC 3879 deprecated them; Python 3.11 still calls them global):
#: a network's own, like the private IPv4 ranges.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
#: ISATAP interface identifiers (RFC 5214): ``…:0:5efe:a.b.c.d`` (or ``200:5efe``) under
#: any prefix tunnels to the IPv4 address in the last 32 bits.
_ISATAP_MARKERS = (0x00005EFE, 0x02005EFE)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address delivers to, for the ranges that embed one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _SIXTO4:
        return ip.sixtofour
    packed = int(ip)
    if ip in _NAT64_WELL_KNOWN or (packed >> 32) & 0xFFFFFFFF in _ISATAP_MARKERS:
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def address_allowed(address: str, allow: Sequence[Network] = ()) -> bool:
    """May mailproxy connect to ``address`` (an IP as ``getaddrinfo`` returns it)?

    Public addresses, and those inside an ``allow`` network. An IPv6 address that embeds
    an IPv4 one (mapped, 6to4, NAT64, ISATAP) is judged by the IPv4 address it reaches;
    Teredo, NAT64 local-use and IPv4-compatible addresses only when allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if any(ip in network for network in allow):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return any(embedded in network for network in allow) or _public(embedded)
        if ip in _SITE_LOCAL or any(ip in network for network in _OPAQUE_V4_CARRIERS):
            return False
    return _public(ip)


def address_literal(host: str) -> str | None:
    """``host`` as an IP address when it is one (``[::1]`` included), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _known_without_lookup(host: str) -> str | None:
    """The address ``host`` stands for without a lookup: an IP literal, or loopback for
    ``localhost`` and the names under it, which always mean this machine (RFC 6761
    §6.3); None for the other names."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "127.0.0.1"
    return address_literal(host)


def url_refusal(url: str, allow: Sequence[Network] = ()) -> str | None:
    """Why a call to ``url`` will be refused by the egress rule, as far as that is known
    without a lookup (its host is an address outside the rule, or ``localhost``), or
    None. Other names are judged when they are resolved, at each call."""
    host = urlsplit(url).hostname or ""
    address = _known_without_lookup(host)
    if address is None or address_allowed(address, allow):
        return None
    return f"{host} is not an address mailproxy may connect to (see security.egress_allow)"


def smtp_host_refusal(host: str, allow: Sequence[Network] = ()) -> str | None:
    """Why an SMTP account's ``host`` is refused before any lookup: it is an address the
    egress rule forbids; None for an allowed address, and for a name (judged when it is
    resolved, at each connection)."""
    literal = address_literal(host)
    if literal is None or address_allowed(literal, allow):
        return None
    return f"{host} is not an address mailproxy may connect to (see security.egress_allow)"


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
