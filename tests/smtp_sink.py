"""A programmable SMTP sink (aiosmtpd) on 127.0.0.1, shared by the system and contract tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    #: When the end of DATA arrived (time.time()).
    at: float = 0.0


@dataclass
class SinkHandler:
    """Answers 250 unless told otherwise. ``replies`` maps ``"MAIL"``, ``"DATA"`` or
    ``"RCPT:<address>"`` to a reply line; ``after_dot`` is ``None``, ``"drop"`` (keep the
    message, close without answering) or ``"stall"`` (keep it, answer too late);
    ``reply_delay_s`` delays every answer to DATA."""

    replies: dict[str, str] = field(default_factory=dict)
    after_dot: str | None = None
    #: ``"RCPT"``: close the connection without answering RCPT.
    drop_at: str | None = None
    #: The share of messages refused at the end of DATA with a transient 451 (seeded).
    transient_rate: float = 0.0
    transient_refusals: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(20261127))
    stall_s: float = 2.0
    #: Seconds to wait after the end of DATA before answering (a provider's latency).
    reply_delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    sessions: int = 0

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if "MAIL" in self.replies:
            return self.replies["MAIL"]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.drop_at == "RCPT":  # hang up before the message could be complete
            server.transport.abort()
            return "250 OK"
        reply = self.replies.get(f"RCPT:{address}") or self.replies.get("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if "DATA" in self.replies:
            return self.replies["DATA"]
        if self.transient_rate and self._rng.random() < self.transient_rate:
            self.transient_refusals += 1
            return "451 4.3.0 temporary failure, try again"
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                list(envelope.mail_options),
                time.time(),
            )
        )
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        if self.after_dot == "drop":
            server.transport.abort()
            return "250 OK"
        if self.after_dot == "stall":
            await asyncio.sleep(self.stall_s)
        return "250 OK"


class CountingController(Controller):
    def factory(self):
        self.handler.sessions += 1
        return super().factory()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_sink(
    host: str = "127.0.0.1", **smtp_parameters: object
) -> Iterator[tuple[SinkHandler, int]]:
    """Start a sink on ``host`` (a loopback address) in its own thread and event loop;
    stop and close both afterwards."""
    handler = SinkHandler()
    loop = asyncio.new_event_loop()
    controller = CountingController(
        handler, hostname=host, port=free_port(host), loop=loop, **smtp_parameters
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()
        loop.close()
