"""The SMTP protocol of one submission session: aiosmtpd's, with this service's rules."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from mailproxy.entrypoints.smtp.handler import (
    COMMAND_BUDGETS,
    REPLIES_BETWEEN_YIELDS,
    TOO_MANY_SESSIONS,
    SubmissionHandler,
)
from mailproxy.mail_settings import SubmissionSettings, is_loopback_host

if TYPE_CHECKING:
    from mailproxy.entrypoints.smtp.listener import SubmissionListener

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: ``<local@domain>`` with a dot-atom local part and a plain domain, then the rest.
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+([^(]*))?", re.S
)


def simple_path(arg: str) -> tuple[str, str] | None:
    """The address and the rest (the parameters) of a MAIL or RCPT argument in the usual
    form, ``<dot-atom@domain> PARAMS``, as aiosmtpd's parser reads them; None for any
    other form."""
    simple = _SIMPLE_PATH.fullmatch(arg)
    return None if simple is None else (simple[1], simple[2] or "")


class SubmissionSession(SMTP):
    """aiosmtpd's SMTP protocol with this service's rules: AUTH relaxed to plaintext per
    connection where allowed (loopback, implicit TLS, or the operator's say-so), the
    credentials checked asynchronously, and every refusal counted by code."""

    def __init__(
        self,
        handler: SubmissionHandler,
        listener: SubmissionListener,
        *,
        implicit_tls: bool,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        options = handler.options
        super().__init__(
            handler,
            data_size_limit=options.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=options.hostname or socket.gethostname(),
            ident="mailproxy",
            tls_context=None if implicit_tls else tls_context,
            timeout=options.idle_timeout_s,
            auth_required=True,
            auth_require_tls=True,
            # The credentials are read by aiosmtpd and judged in _judged (a coroutine:
            # the key is looked up in the store).
            authenticator=_credentials_as_read,
            command_call_limit=COMMAND_BUDGETS,
            loop=asyncio.get_running_loop(),
        )
        self.submission = handler
        self.listener = listener
        self.implicit_tls = implicit_tls
        self.client = ""
        self.replies = 0
        #: Refused at connection (too many): never a session.
        self.turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if first and not self.listener.admits(self.client):
            # Every connection holds a file descriptor the HTTP API needs too.
            self.turned_away = True
            self.submission.metrics.refused.labels(code=TOO_MANY_SESSIONS[:3]).inc()
            # uvloop's transports write without being asyncio.WriteTransport subclasses.
            write = getattr(transport, "write", None)
            if callable(write):
                write(TOO_MANY_SESSIONS.encode() + b"\r\n")
            transport.close()
            return
        super().connection_made(transport)
        if not first:
            return  # STARTTLS: the same session
        self.listener.opened(self)
        self.submission.metrics.sessions.inc()
        if plaintext_auth_allowed(self.client, self.implicit_tls, self.submission.options):
            self._auth_require_tls = False

    def eof_received(self) -> bool | None:
        return False if self.turned_away else super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self.turned_away:
            return
        self.listener.closed(self)
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd reads every MAIL and RCPT path with the email package's full RFC 5322
        # parser (and builds a class per call): a quarter of the CPU of a submission. The
        # usual path, <dot-atom@domain>, is read by a pattern with the same result; any
        # other goes to the parser.
        simple = simple_path(arg)
        return simple if simple is not None else super()._getaddr(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd keeps each line of the content as an object of its own until the end:
        # a message of 25 MiB in two-byte lines held 2 GB. This reads the same protocol
        # (RFC 5321 4.1.1.4, 4.5.2) into one buffer, the size of the message at most.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self.listener.data_started()
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content, refusal = await self._content()
            if refusal is None:
                self.envelope.content = self.envelope.original_content = content
                status = await self._call_handler_hook("DATA")
                refusal = "250 OK" if status is MISSING else status
            self.envelope = self._create_envelope()  # the post-DATA state
            await self.push(refusal)
        finally:
            self.listener.data_ended()

    async def _content(self) -> tuple[bytes, str | None]:
        """The lines up to the lone dot, dot-unstuffed; with the refusal of a line past
        the limit or a message past the size (read to its end all the same)."""
        body = bytearray()
        limit = self.data_size_limit or 0
        refusal: str | None = None
        continued = False  # the rest of a line longer than the reader's limit
        while True:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as overrun:
                await self._reader.readexactly(overrun.consumed)
                refusal = refusal or "500 5.5.6 Line too long (see RFC 5321 4.5.3.1.6)"
                continued = True
                continue
            if continued:
                continued = False
                continue
            if line == b".\r\n":
                return bytes(body), refusal
            if refusal is not None:
                continue
            if line.startswith(b"."):
                line = line[1:]
            if limit and len(body) + len(line) > limit:
                refusal = f"552 5.3.4 Message too big: more than {limit} bytes"
                body.clear()
                continue
            body += line

    async def push(self, status: str) -> None:  # type: ignore[override]
        if status[:1] in ("4", "5"):
            self.submission.metrics.refused.labels(code=status[:3]).inc()
        await super().push(status)
        # A client that pipelines commands without end would otherwise keep the event
        # loop (and the HTTP API on it) for as long as its buffer holds commands: every
        # few replies, the others get their turn.
        self.replies += 1
        if self.replies % REPLIES_BETWEEN_YIELDS == 0:
            await asyncio.sleep(0)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._judged(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._judged(await super().auth_LOGIN(_, args))

    async def _judged(self, read: AuthResult) -> AuthResult:
        if not read.success or not isinstance(read.auth_data, LoginPassword):
            return read  # malformed, aborted: aiosmtpd has answered or will
        assert self.session is not None
        return await self.submission.authenticate(self.session.peer, read.auth_data)


def plaintext_auth_allowed(peer_host: str, implicit_tls: bool, options: SubmissionSettings) -> bool:
    """Whether AUTH may be offered before STARTTLS: on the implicit-TLS port (TLS from
    the first byte), to a loopback client (nothing crosses a network), or everywhere when
    the operator says so."""
    return implicit_tls or options.allow_plaintext_auth or is_loopback_host(peer_host)


def _credentials_as_read(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd's authenticator hook is synchronous: it hands the credentials on
    unjudged, and :meth:`SubmissionSession._judged` decides."""
    return AuthResult(success=True, handled=False, auth_data=auth_data)
