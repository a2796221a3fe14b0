"""PEC (Italian certified e-mail) receipts: what a provider's receipt says about a message
a PEC account sent, and the report events it makes.

A PEC provider answers each message with receipts, each a message of its own carrying
``X-Ricevuta`` (its kind) and ``X-Riferimento-Message-ID`` (the Message-ID of the message
it is about), and a ``daticert.xml`` part with the certified data: the recipient
(``consegna``), the provider's time (``data``) and, for a failure, the error
(``errore-esteso``). Acceptance (``accettazione``) says the sender's provider took the
message; delivery (``avvenuta-consegna``) that it reached a recipient's mailbox; the
others that it did not (``non-accettazione``, ``errore-consegna``,
``preavviso-errore-consegna``, ``rilevazione-virus``). ``presa-in-carico`` (taken in
charge by the recipient's provider) is not reported.

Pure: bytes in, facts out; the time of a receipt without a readable one comes in.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Literal

import msgspec

PecEventKind = Literal["pec_acceptance", "pec_delivery", "pec_error"]
PecStage = Literal["acceptance", "delivery"]
#: What a receipt changes in what its message waits for: acceptance came; one
#: recipient is done (delivered, or failed for good); the provider refused the message
#: (nothing more will come); or nothing.
PecProgress = Literal["accepted", "recipient_done", "refused", "noted"]
_PROGRESS: dict[str, PecProgress] = {
    "accettazione": "accepted",
    "avvenuta-consegna": "recipient_done",
    "errore-consegna": "recipient_done",
    "rilevazione-virus": "recipient_done",
    "non-accettazione": "refused",
    # A warning that delivery is late (an errore-consegna may follow), and the
    # recipient's provider taking the message in charge: the wait goes on.
    "preavviso-errore-consegna": "noted",
    "presa-in-carico": "noted",
}

#: ``X-Ricevuta`` → the event it makes (None: read, not reported).
RECEIPT_KINDS: dict[str, PecEventKind | None] = {
    "accettazione": "pec_acceptance",
    "avvenuta-consegna": "pec_delivery",
    "non-accettazione": "pec_error",
    "errore-consegna": "pec_error",
    "preavviso-errore-consegna": "pec_error",
    "rilevazione-virus": "pec_error",
    "presa-in-carico": None,
}
#: Past this, a daticert.xml is not read (they are a few hundred bytes).
MAX_DATICERT_BYTES = 64 * 1024
_MAX_DETAILS = 500
_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_ZONE = re.compile(r"([+-])(\d{2})(\d{2})")


class PecReceipt(msgspec.Struct, frozen=True, kw_only=True):
    """One receipt as read: its ``X-Ricevuta``, the event it makes (None for one that is
    not reported), the Message-ID it is about (without angle brackets), the recipient it
    names, the provider's error text, and when the provider says it happened (None when
    its daticert.xml gives no readable time)."""

    receipt: str
    kind: PecEventKind | None
    message_id: str
    recipient: str | None = None
    details: str | None = None
    ts: float | None = None


def read_receipt(raw: bytes) -> PecReceipt | None:
    """The receipt ``raw`` is, or None when it is not a PEC receipt of a known kind about
    a message (no ``X-Ricevuta`` or ``X-Riferimento-Message-ID``)."""
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    receipt = _header(mail, "X-Ricevuta").lower()
    reference = _header(mail, "X-Riferimento-Message-ID").strip().strip("<>").strip()
    if receipt not in RECEIPT_KINDS or not reference:
        return None
    recipient = details = None
    ts: float | None = None
    certified = _daticert(mail)
    if certified is not None:
        recipient = _text(certified, "dati/consegna") or None
        details = _text(certified, "dati/errore-esteso")[:_MAX_DETAILS] or None
        ts = _provider_time(certified)
    return PecReceipt(
        receipt=receipt, kind=RECEIPT_KINDS[receipt], message_id=reference,
        recipient=recipient, details=details, ts=ts,
    )  # fmt: skip


def progress_of(receipt: PecReceipt) -> PecProgress:
    """What ``receipt`` changes in what its message waits for."""
    return _PROGRESS[receipt.receipt]


def _header(mail: EmailMessage, name: str) -> str:
    value = mail.get(name)
    return "" if value is None else " ".join(str(value).split())


def _daticert(mail: EmailMessage) -> ElementTree.Element | None:
    """The certified data, when the receipt carries a readable daticert.xml."""
    for part in mail.walk():
        if part.get_filename() != "daticert.xml" and part.get_content_type() != "application/xml":
            continue
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes) or len(content) > MAX_DATICERT_BYTES:
            return None
        # No document type, so no entity of the sender's can be declared (and expanded).
        if re.search(rb"<!(DOCTYPE|ENTITY)", content, re.IGNORECASE):
            return None
        try:
            return ElementTree.fromstring(content)
        except ElementTree.ParseError:
            return None
    return None


def _text(root: ElementTree.Element, path: str) -> str:
    found = root.find(path)
    return "" if found is None or found.text is None else " ".join(found.text.split())


def _provider_time(root: ElementTree.Element) -> float | None:
    """``<data zona="+0100"><giorno>07/12/2026</giorno><ora>09:15:02</ora></data>``."""
    data = root.find("dati/data")
    if data is None:
        return None
    day, clock = _DATE.fullmatch(_text(data, "giorno")), _TIME.fullmatch(_text(data, "ora"))
    zone = _ZONE.fullmatch(data.get("zona", "+0000").strip())
    if day is None or clock is None or zone is None:
        return None
    offset = timedelta(hours=int(zone[2]), minutes=int(zone[3]))
    try:
        at = datetime(
            int(day[3]), int(day[2]), int(day[1]), int(clock[1]), int(clock[2]),
            int(clock[3] or 0), tzinfo=timezone(-offset if zone[1] == "-" else offset),
        )  # fmt: skip
    except ValueError:
        return None
    return at.timestamp()
