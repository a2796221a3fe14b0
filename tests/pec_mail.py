"""PEC receipts for the tests, built the way the Italian certified-mail rules lay them out
(written for these tests): a multipart message from the provider with ``X-Ricevuta``
and ``X-Riferimento-Message-ID``, a text for people, the certified data in
``daticert.xml`` and, for a delivery receipt, the original message."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.service import MailProxy
from mailproxy.service.options import DeliveryOptions
from tests.conftest import Clock

ACCEPTANCE_S, DELIVERY_S = 1800.0, 86_400.0

SUBJECTS = {
    "accettazione": "ACCETTAZIONE",
    "non-accettazione": "AVVISO DI NON ACCETTAZIONE",
    "presa-in-carico": "PRESA IN CARICO",
    "avvenuta-consegna": "CONSEGNA",
    "errore-consegna": "AVVISO DI MANCATA CONSEGNA",
    "preavviso-errore-consegna": "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO",
}


def daticert(
    kind: str,
    message_id: str,
    *,
    recipient: str | None,
    error: str | None,
    day: str,
    clock: str,
    zone: str,
) -> bytes:
    delivery = f"<consegna>{recipient}</consegna>" if recipient else ""
    extended = f"<errore-esteso>{error}</errore-esteso>" if error else ""
    status = "nessuno" if error is None else "no-dest"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<postacert tipo="{kind}" errore="{status}">'
        "<intestazione><mittente>shop@pec.example.it</mittente>"
        f'<destinatari tipo="certificato">{recipient or "jane@pec.example.it"}</destinatari>'
        "<risposte>shop@pec.example.it</risposte><oggetto>Invoice 7</oggetto></intestazione>"
        "<dati><gestore-emittente>Example PEC provider</gestore-emittente>"
        f'<data zona="{zone}"><giorno>{day}</giorno><ora>{clock}</ora></data>'
        "<identificativo>opec-2026.12.07-1@pec.example.it</identificativo>"
        f"<msgid>&lt;{message_id}&gt;</msgid>{delivery}{extended}</dati></postacert>"
    ).encode()


def receipt(
    kind: str,
    message_id: str,
    *,
    recipient: str | None = None,
    error: str | None = None,
    day: str = "07/12/2026",
    clock: str = "09:15:02",
    zone: str = "+0100",
    certified: bytes | None = None,
) -> bytes:
    """A receipt of ``kind`` (an ``X-Ricevuta``) about the message ``message_id``
    (without angle brackets); ``certified`` replaces the daticert.xml."""
    mail = EmailMessage()
    mail["Return-Path"] = "<posta-certificata@pec.example.it>"
    mail["From"] = "Per conto di: posta-certificata@pec.example.it"
    mail["To"] = "shop@pec.example.it"
    mail["Subject"] = f"{SUBJECTS.get(kind, kind.upper())}: Invoice 7"
    mail["Message-ID"] = f"<{kind}-{message_id}@pec.example.it>"
    mail["X-Ricevuta"] = kind
    mail["X-Riferimento-Message-ID"] = f"<{message_id}>"
    mail["X-Trasporto"] = "posta-certificata"
    mail.set_content(f"Ricevuta di {kind} del messaggio {message_id}.\n")
    mail.add_attachment(
        certified or daticert(
            kind, message_id, recipient=recipient, error=error, day=day, clock=clock, zone=zone
        ),
        maintype="application", subtype="xml", filename="daticert.xml",
    )  # fmt: skip
    if kind == "avvenuta-consegna":
        original = EmailMessage()
        original["Message-ID"] = f"<{message_id}>"
        original["Subject"] = "Invoice 7"
        original.set_content("the message as delivered\n")
        mail.add_attachment(original, filename="postacert.eml")
    return mail.as_bytes(policy=SMTP)


@contextlib.asynccontextmanager
async def pec_service(
    tmp_path: Path,
    sink_port: int,
    open_mailbox: Callable[..., Any],
    mailbox: dict[str, Any],
    clock: Clock,
    **options: Any,
) -> AsyncIterator[MailProxy]:
    """The service on a SQLite file with a tenant ``acme`` whose default account ``pec``
    is a PEC one sending to the sink on 127.0.0.1:``sink_port``, its receipts in
    ``mailbox`` (a bounce_mailbox body, opened with ``open_mailbox``); receipts are
    awaited :data:`ACCEPTANCE_S` and :data:`DELIVERY_S`."""
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8"))
    async with MailProxy(
        store=SqliteStore(tmp_path / "pec.db"), transports={"smtp": transport}, clock=clock,
        open_mailbox=open_mailbox,
        delivery=DeliveryOptions(
            pec_acceptance_timeout_s=ACCEPTANCE_S, pec_delivery_timeout_s=DELIVERY_S
        ),
        **options,
    ) as service:  # fmt: skip
        await service.put_tenant({"id": "acme"})
        await service.put_account(
            {"id": "pec", "tenant_id": "acme", "host": "127.0.0.1", "port": sink_port,
             "use_tls": False, "is_default": True, "pec": True, "bounce_mailbox": mailbox}
        )  # fmt: skip
        yield service
