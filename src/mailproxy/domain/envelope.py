"""Who a message goes to and who it comes from, as sending needs them: the envelope
recipients (shared by rendering and the suppression check of a claim) and the author's
domain (the one a DKIM key signs for)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import Claim, MessageSpec
from mailproxy.domain.submitted import author_address_of
from mailproxy.domain.validation import address_of, idna_domain


def envelope_address(addr: str) -> str:
    """The address as written in MAIL FROM / RCPT TO: IDNA domain unless SMTPUTF8 is
    needed anyway."""
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        return addr
    return f"{local}@{idna_domain(domain)}"


def envelope_recipients(spec: MessageSpec) -> tuple[str, ...]:
    """Who ``spec`` goes to, in the envelope's form, each once: To, Cc and Bcc (a
    submitted message's envelope recipients are its To). Raises :class:`InvalidInput`
    for an address that has no envelope form."""
    recipients = (*spec.to, *spec.cc, *spec.bcc)
    return tuple(dict.fromkeys(envelope_address(address_of(r)) for r in recipients))


def with_suppressed(
    claims: Sequence[Claim], suppressed_among: Callable[[str, list[str]], set[str]]
) -> list[Claim]:
    """``claims`` with the envelope recipients of each that are suppressed now, read with
    one ``suppressed_among(tenant_id, addresses)`` per tenant in the claim (the store's
    read, inside the claim's transaction). A message whose recipients have no envelope
    form gets none: its attempt fails on them before any suppression matters."""
    recipients: dict[int, tuple[str, ...]] = {}
    by_tenant: dict[str, dict[str, None]] = {}
    for claim in claims:
        try:
            found = envelope_recipients(claim.message.spec)
        except InvalidInput:
            found = ()
        recipients[claim.lease.pk] = found
        by_tenant.setdefault(claim.message.tenant_id, {}).update(dict.fromkeys(found))
    listed = {t: suppressed_among(t, list(a)) for t, a in by_tenant.items() if a}
    return [
        msgspec.structs.replace(
            claim,
            suppressed=frozenset(
                a
                for a in recipients[claim.lease.pk]
                if a in listed.get(claim.message.tenant_id, ())
            ),
        )
        for claim in claims
    ]


def author_domain(spec: MessageSpec) -> str | None:
    """The domain of the message's author, in its ASCII (IDNA) form and lower case: the
    domain a DKIM key must sign for. A submitted message's own ``From`` field (never its
    envelope sender), a REST message's ``from``; None when that cannot be read."""
    address = author_address_of(spec.raw) if spec.raw is not None else address_of(spec.from_)
    domain = (address or "").rpartition("@")[2]
    if not domain:
        return None
    try:
        return idna_domain(domain).lower()
    except ValueError:
        return None
