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

import itertools
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Literal

import msgspec

PecEventKind = Literal["pec_acceptance", "pec_delivery", "pec_error"]
PecStage = Literal["acceptance", "delivery"]

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
#: What a receipt tells of the wait: acceptance came ("accepted"); one recipient is done,
#: delivered or failed for good ("done:<address>"); the provider refused the message
#: ("refused"); or nothing (a warning, a recipient's provider taking it in charge).
_MARKS: dict[str, str | None] = {
    "accettazione": "accepted",
    "avvenuta-consegna": "done",
    "errore-consegna": "done",
    "rilevazione-virus": "done",
    "non-accettazione": "refused",
    "preavviso-errore-consegna": None,
    "presa-in-carico": None,
}
#: What becomes of a message's wait once a deadline has passed.
PecAction = Literal["keep", "stop_acceptance", "forget"]
#: What is read of a message in a PEC mailbox, as of a bounce report: its first bytes
#: and parts (a receipt has three or four parts and a few kilobytes).
MAX_RECEIPT_BYTES = 2 * 1024 * 1024
MAX_RECEIPT_PARTS = 50
#: Past this, a daticert.xml is not read (they are a few hundred bytes).
MAX_DATICERT_BYTES = 64 * 1024
_MAX_DETAILS = 500
#: A Message-ID longer than a header line is none we gave.
_MAX_REFERENCE = 998
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
    a message (no ``X-Ricevuta`` or ``X-Riferimento-Message-ID``). Never raises, and reads
    no more than :data:`MAX_RECEIPT_BYTES` and :data:`MAX_RECEIPT_PARTS`: any message may
    arrive in the mailbox."""
    try:
        return _read(raw[:MAX_RECEIPT_BYTES])
    except Exception:  # a parser's failure on hostile mail must not stop the poller
        return None


def _read(raw: bytes) -> PecReceipt | None:
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    receipt = _header(mail, "X-Ricevuta").lower()
    reference = _header(mail, "X-Riferimento-Message-ID").strip().strip("<>").strip()
    if receipt not in RECEIPT_KINDS or not reference or len(reference) > _MAX_REFERENCE:
        return None
    recipient = details = None
    ts: float | None = None
    certified = _daticert(mail)
    if certified is not None:
        recipient = _text(certified, "dati/consegna")[:_MAX_DETAILS] or None
        details = _text(certified, "dati/errore-esteso")[:_MAX_DETAILS] or None
        ts = _provider_time(certified)
    return PecReceipt(
        receipt=receipt, kind=RECEIPT_KINDS[receipt], message_id=reference,
        recipient=recipient, details=details, ts=ts,
    )  # fmt: skip


def receipt_mark(receipt: PecReceipt) -> str | None:
    """What ``receipt`` tells of its message's wait (a mark kept with the message; the
    same mark twice counts once: a receipt read again, or two about one recipient)."""
    mark = _MARKS[receipt.receipt]
    if mark == "done":
        return f"done:{(receipt.recipient or '').lower()}"
    return mark


def overdue(
    acceptance_due_ts: float | None,
    delivery_due_ts: float,
    recipients: int,
    marks: Collection[str],
    now: float,
) -> tuple[PecStage | None, PecAction]:
    """For a message waiting for its receipts, with the ``marks`` its receipts left: the
    stage whose ``pec_timeout`` is due now (None: none), and what becomes of the wait.
    Without acceptance no delivery comes: a late acceptance ends the wait; a delivery
    receipt stands for the acceptance it implies."""
    if "refused" in marks:
        return None, "forget"
    done = sum(1 for mark in marks if mark.startswith("done:"))
    if acceptance_due_ts is not None and acceptance_due_ts <= now:
        if "accepted" not in marks and not done:
            return "acceptance", "forget"
        if delivery_due_ts > now:
            return None, "stop_acceptance"
    if delivery_due_ts <= now:
        return (None if done >= recipients else "delivery"), "forget"
    return None, "keep"


def _header(mail: EmailMessage, name: str) -> str:
    value = mail.get(name)
    return "" if value is None else " ".join(str(value).split())


def _daticert(mail: EmailMessage) -> ElementTree.Element | None:
    """The certified data, when the receipt carries a readable daticert.xml."""
    for part in itertools.islice(mail.walk(), MAX_RECEIPT_PARTS):
        if part.get_filename() != "daticert.xml" and part.get_content_type() != "application/xml":
            continue
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes) or len(content) > MAX_DATICERT_BYTES:
            return None
        # No document type, so no entity of the sender's can be declared (and expanded);
        # and 8-bit text only (a UTF-16 document would hide its declarations from this).
        if b"\0" in content or re.search(rb"<!(DOCTYPE|ENTITY)", content, re.IGNORECASE):
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
