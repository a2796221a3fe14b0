"""DKIM keys of a tenant (RFC 6376; Ed25519 per RFC 8463): which key signs a message, the
DNS record that publishes a key, and how adding or removing one changes the set.

A tenant keeps its keys by domain and selector. Adding a key for a domain makes it the
one that signs that domain's mail; the domain's earlier keys stay, inactive, so that
both selectors are published while resolvers still hold the old record (a rotation).
Mail is signed with the newest active key of its author's domain, or failing that of the
nearest parent domain that has one (``news.example.com`` with a key of ``example.com``):
the organizational domain is approximated by walking up the labels, never past two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import msgspec

from mailproxy.domain.errors import Conflict, InvalidInput, NotFound

DkimAlgorithm = Literal["rsa-sha256", "ed25519-sha256"]
DKIM_ALGORITHMS: tuple[DkimAlgorithm, ...] = ("rsa-sha256", "ed25519-sha256")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class DkimKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One signing key of a tenant."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm = "rsa-sha256"
    #: PEM (PKCS#8), sealed at rest when the instance has an encryption key; never shown.
    private_key: str
    #: The public key as the DNS record's ``p=`` value (base64).
    public_key: str
    created_ts: float
    #: Signs its domain's mail; a key rotated out stays, inactive, until it is removed.
    active: bool = True


class DnsRecord(msgspec.Struct, frozen=True):
    """The TXT record that publishes a key."""

    name: str
    type: str
    value: str


def check_key_name(domain: object, selector: object) -> tuple[str, str]:
    """The domain (lower case) and selector of a new key; :class:`InvalidInput` naming
    the field when either is not a DNS name (the domain with two labels at least)."""
    if not isinstance(domain, str) or len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise InvalidInput("domain", "invalid domain: a DNS name such as example.com")
    if not isinstance(selector, str) or len(selector) > 63 or not _SELECTOR.fullmatch(selector):
        raise InvalidInput(
            "selector", "invalid selector: letters, digits and hyphens, such as mail2026"
        )
    return domain.lower(), selector.lower()  # DNS names: one whatever their case


def check_algorithm(algorithm: object) -> DkimAlgorithm:
    for known in DKIM_ALGORITHMS:
        if algorithm == known:
            return known
    raise InvalidInput("algorithm", f"invalid algorithm: one of {', '.join(DKIM_ALGORITHMS)}")


def dns_record(key: DkimKey) -> DnsRecord:
    """The TXT record to publish for ``key``."""
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    return DnsRecord(
        name=f"{key.selector}._domainkey.{key.domain}",
        type="TXT",
        value=f"v=DKIM1; k={kind}; p={key.public_key}",
    )


#: Keys a tenant may keep: a few domains, each with two selectors during a rotation.
MAX_KEYS = 50


def with_key_added(keys: Sequence[DkimKey], new: DkimKey) -> tuple[DkimKey, ...]:
    """``keys`` with ``new``, which signs its domain from now on (the domain's other keys
    stay published, inactive). :class:`Conflict` when the selector is taken or the
    tenant has :data:`MAX_KEYS` already."""
    if any(k.domain == new.domain and k.selector == new.selector for k in keys):
        raise Conflict(f"a DKIM key {new.selector} for {new.domain} already exists")
    if len(keys) >= MAX_KEYS:
        raise Conflict(f"at most {MAX_KEYS} DKIM keys per tenant: remove one first")
    kept = tuple(
        msgspec.structs.replace(k, active=False) if k.domain == new.domain else k for k in keys
    )
    return (*kept, msgspec.structs.replace(new, active=True))


def without_key(keys: Sequence[DkimKey], domain: str, selector: str) -> tuple[DkimKey, ...]:
    """``keys`` without that one (:class:`NotFound` when absent). Removing the active key
    makes the domain's newest remaining key sign, so that the domain is not left unsigned
    while another key is still published."""
    domain, selector = domain.lower(), selector.lower()
    remaining = tuple(k for k in keys if not (k.domain == domain and k.selector == selector))
    if len(remaining) == len(keys):
        raise NotFound("DKIM key", f"{selector}._domainkey.{domain}")
    removed = next(k for k in keys if k.domain == domain and k.selector == selector)
    same_domain = [k for k in remaining if k.domain == domain]
    if not removed.active or not same_domain or any(k.active for k in same_domain):
        return remaining
    newest = max(same_domain, key=lambda k: k.created_ts)
    return tuple(msgspec.structs.replace(k, active=True) if k is newest else k for k in remaining)


def signing_key(keys: Sequence[DkimKey], author_domain: str) -> DkimKey | None:
    """The key that signs mail from ``author_domain``: the newest active key of that
    domain or of its nearest parent with one (two labels at least); None: unsigned."""
    labels = author_domain.lower().rstrip(".").split(".")
    for start in range(max(0, len(labels) - 1)):
        domain = ".".join(labels[start:])
        found = [k for k in keys if k.active and k.domain == domain]
        if found:
            return max(found, key=lambda k: k.created_ts)
    return None
