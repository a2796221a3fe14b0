"""SMTP submission: aiosmtpd inside ``serve``, on the proxy the HTTP app serves (HTTP API,
"SMTP submission").

Every transaction needs AUTH (PLAIN or LOGIN): the user is a tenant id, or
``tenant/account`` to pick the account; the password is one of the tenant's API keys,
checked as the API checks it. AUTH is offered only over TLS (STARTTLS or the implicit-TLS
port), except to loopback clients or when the operator allows plaintext outright.
Failed AUTH answers 535 after ``auth_failure_delay_s``; past ``security.auth_max_failures``
failures within the window, an address is answered 454 without its credentials being
checked (the same throttle rule as the API's, kept apart: SMTP failures do not lock out
the address's HTTP calls).

Each RCPT is checked on its own (501 invalid, 550 suppressed, 452 past the recipient
limit: the others are still accepted); the final 250 to DATA is sent only once the message
is committed (``250 2.0.0 queued as <id>``), a store that cannot take it answers 451. The
service does the rest (``MailProxy.submit_raw``): a message submitted here is, downstream,
one posted over REST.

Shutdown: new connections are refused and new transactions answered 421; those in DATA
finish; then every session is told 421 and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax
from prometheus_client import CollectorRegistry, Counter

from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.config import Settings, SubmissionSettings, is_loopback_host
from mailproxy.domain.errors import InvalidInput, NotFound, StorageError
from mailproxy.domain.throttle import FailedAuthentications
from mailproxy.domain.validation import check_addr_spec
from mailproxy.service import MailProxy

log = logging.getLogger("mailproxy.smtp")

QUEUED = "250 2.0.0 queued as {id}"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
STORE_UNAVAILABLE = "451 4.3.0 Message store unavailable, try again later"
BAD_SENDER = "501 5.1.7 Bad sender address"
NULL_SENDER = "501 5.1.7 A null sender is not accepted for submission"
TLS_HANDSHAKE_TIMEOUT_S = 10.0
#: Replies a session may send before it lets the rest of the event loop run.
REPLIES_BETWEEN_YIELDS = 8
TOO_MANY_SESSIONS = "421 4.7.0 Too many connections, try again later"
#: Commands a client needs a few times per session at most: past these budgets, the
#: session is closed (421). MAIL, RCPT, DATA and RSET are not counted ("*").
COMMAND_BUDGETS = {"NOOP": 100, "HELP": 10, "VRFY": 10, "EXPN": 10, "AUTH": 10,
                   "EHLO": 20, "HELO": 20, "STARTTLS": 3, "*": 2**62}  # fmt: skip
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
INVALID_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
SUPPRESSED_RECIPIENT = "550 5.7.1 Recipient suppressed (hard bounce, complaint or by hand)"
#: Credentials of one client address checked at once (the others wait their turn).
AUTH_CHECKS_AT_ONCE = 3
THROTTLED = "454 4.7.0 Too many failed authentications, try again in {seconds} s"
AUTH_UNAVAILABLE = "454 4.3.0 Cannot check credentials now, try again later"


class Login(msgspec.Struct, frozen=True):
    """Who a session authenticated as: the tenant, and the account it picked (None: the
    tenant's default, as REST's ``account_id`` left out)."""

    tenant_id: str
    account_id: str | None


class SubmissionMetrics:
    """``gmp_submission_*`` on the proxy's registry (the one ``/metrics`` shows)."""

    def __init__(self, proxy: MailProxy) -> None:
        events = proxy.events
        registry = events.registry if isinstance(events, PrometheusMetrics) else CollectorRegistry()
        self.sessions = Counter(
            "gmp_submission_sessions", "SMTP submission sessions opened", registry=registry
        )
        self.auth_failures = Counter(
            "gmp_submission_auth_failures",
            "Failed SMTP AUTH: wrong credentials, and attempts refused unchecked because "
            "their address had too many",
            ["outcome"],
            registry=registry,
        )
        self.accepted = Counter(
            "gmp_submission_accepted",
            "Messages accepted over SMTP (committed before the 250)",
            ["tenant_id"],
            registry=registry,
        )
        self.refused = Counter(
            "gmp_submission_refused",
            "SMTP replies that refused something, by reply code",
            ["code"],
            registry=registry,
        )


class _Turns:
    """The AUTH checks of one client address: who is waiting, and the turns."""

    def __init__(self) -> None:
        self.waiting = 0
        self.semaphore = asyncio.Semaphore(AUTH_CHECKS_AT_ONCE)


class SubmissionHandler:
    """The aiosmtpd handler: credentials, the recipient checks and the commit, on
    ``proxy``. ``closing`` makes new transactions answer 421."""

    def __init__(self, proxy: MailProxy, settings: Settings, metrics: SubmissionMetrics) -> None:
        self.proxy = proxy
        self.options = settings.submission
        self.metrics = metrics
        self.closing = False
        self._failures = FailedAuthentications(settings.security.auth_throttle)
        #: Credentials being checked or waiting for their turn, per client address.
        self._turns: dict[str, _Turns] = {}

    async def authenticate(self, peer: Any, credentials: LoginPassword) -> AuthResult:
        """Check a user (``TENANT`` or ``TENANT/ACCOUNT``) and an API key."""
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        # A few checks at a time per address, the throttle read after waiting for a
        # turn: many connections guessing at once would otherwise all be checked before
        # the first failure was counted. Right credentials only wait for their turn.
        turn = self._turns.setdefault(client, _Turns())
        turn.waiting += 1
        try:
            async with turn.semaphore:
                wait = self._failures.retry_after(client, self.proxy.now())
                if wait is not None:
                    self.metrics.auth_failures.labels(outcome="throttled").inc()
                    message = THROTTLED.format(seconds=int(wait) + 1)
                    return AuthResult(success=False, handled=False, message=message)
                return await self._checked(client, credentials)
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[client]

    async def _checked(self, client: str, credentials: LoginPassword) -> AuthResult:
        try:
            user = credentials.login.decode("utf-8")
            key = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            user = key = ""
        tenant_id, _, account_id = user.partition("/")
        try:
            owner = await self.proxy.tenant_of_key(key) if tenant_id and key else None
        except StorageError:
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if owner is None or owner != tenant_id or (not account_id and "/" in user):
            self._failures.failed(client, self.proxy.now())
            self.metrics.auth_failures.labels(outcome="wrong").inc()
            # Slows a guesser down; the throttle stops one that keeps going.
            await asyncio.sleep(self.options.auth_failure_delay_s)
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=Login(tenant_id, account_id or None))

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads one command at a time from a buffered stream and answers in
        # order, which is all RFC 2920 asks of a server: it is said, so clients use it.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        # What aiosmtpd could not handle (a line past its limit inside AUTH, bytes that
        # are not UTF-8): a warning without traceback, and no internals to the client.
        log.warning("submission.error", extra={"error": type(error).__name__})
        return "500 5.5.0 Command not understood"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.closing:
            return SHUTTING_DOWN
        try:
            check_addr_spec("from", address)
        except InvalidInput:
            # A null sender (<>) is a bounce's: an application submits as someone.
            return BAD_SENDER if address else NULL_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.closing:
            return SHUTTING_DOWN
        if address in envelope.rcpt_tos:
            return "250 2.1.5 OK"  # named twice, sent once
        if len(envelope.rcpt_tos) >= self.options.max_recipients:
            return TOO_MANY_RECIPIENTS
        login = login_of(session)
        try:
            refusal = await self.proxy.check_recipient(login.tenant_id, address)
        except StorageError:
            return STORE_UNAVAILABLE
        if refusal == "invalid":
            return INVALID_RECIPIENT
        if refusal == "suppressed":
            return SUPPRESSED_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = login_of(session)
        content = envelope.original_content or b""
        if sent_size(content) > self.options.max_message_bytes:
            # Bare line ends become CRLF when the message is kept: the limit holds for
            # what is kept and sent, not only for what came.
            return f"552 5.3.4 Message too big: more than {self.options.max_message_bytes} bytes"
        try:
            accepted = await self.proxy.submit_raw(
                content, tenant_id=login.tenant_id, account_id=login.account_id,
                mail_from=envelope.mail_from or "", recipients=list(envelope.rcpt_tos),
                max_recipients=self.options.max_recipients,
            )  # fmt: skip
        except (InvalidInput, NotFound) as exc:
            return f"554 5.6.0 {one_line(str(exc))}"
        except StorageError:
            return STORE_UNAVAILABLE
        except Exception:
            # Never a 250 that is not on disk, and never a session lost to a bug: the
            # client keeps the message and tries again.
            log.exception("submission.failed", extra={"tenant_id": login.tenant_id})
            return "451 4.3.0 Temporary failure, try again later"
        self.metrics.accepted.labels(tenant_id=login.tenant_id).inc()
        return QUEUED.format(id=accepted.id)


def sent_size(content: bytes) -> int:
    """The size of ``content`` once each bare CR and bare LF is a CRLF."""
    crlf = content.count(b"\r\n")
    return len(content) + (content.count(b"\n") - crlf) + (content.count(b"\r") - crlf)


def login_of(session: Session) -> Login:
    """Who the session authenticated as (aiosmtpd has checked that it did)."""
    login = session.auth_data
    if not isinstance(login, Login):
        raise RuntimeError("a transaction without AUTH reached the handler")
    return login


def one_line(text: str, limit: int = 400) -> str:
    """An error's text as one reply line: no line breaks, bounded."""
    return " ".join(text.split())[:limit]


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


class SubmissionListener:
    """The SMTP listeners of one process, on sockets bound beforehand (see ``serve``)."""

    def __init__(
        self,
        proxy: MailProxy,
        settings: Settings,
        starttls_socket: socket.socket | None,
        tls_socket: socket.socket | None,
    ) -> None:
        self.handler = SubmissionHandler(proxy, settings, SubmissionMetrics(proxy))
        self.settings = settings.submission
        self.sockets = [(s, tls) for s, tls in ((starttls_socket, False), (tls_socket, True)) if s]
        self.sessions: set[SubmissionSession] = set()
        self._per_client: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        #: Sessions between DATA and its reply (a shutdown lets them finish).
        self._in_data = 0
        self._no_data = asyncio.Event()
        self._no_data.set()

    def admits(self, client: str) -> bool:
        """Whether a new connection from ``client`` may have a session: under
        ``max_sessions`` in all and ``max_sessions_per_address`` from its address."""
        return (
            len(self.sessions) < self.settings.max_sessions
            and self._per_client.get(client, 0) < self.settings.max_sessions_per_address
        )

    def opened(self, session: SubmissionSession) -> None:
        self.sessions.add(session)
        self._per_client[session.client] = self._per_client.get(session.client, 0) + 1

    def closed(self, session: SubmissionSession) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        left = self._per_client.pop(session.client, 1) - 1
        if left > 0:
            self._per_client[session.client] = left

    def data_started(self) -> None:
        self._in_data += 1
        self._no_data.clear()

    def data_ended(self) -> None:
        self._in_data -= 1
        if self._in_data == 0:
            self._no_data.set()

    async def start(self) -> None:
        aiosmtpd_log = logging.getLogger("mail.log")
        if without_login_data_warning not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(without_login_data_warning)
        loop = asyncio.get_running_loop()
        context = tls_context(self.settings)
        for sock, implicit in self.sockets:

            def session(implicit: bool = implicit) -> SubmissionSession:
                return SubmissionSession(
                    self.handler, self, implicit_tls=implicit, tls_context=context
                )

            # On the implicit-TLS port a connection is a session only once its handshake
            # is done: until then only this timeout bounds it.
            server = await loop.create_server(
                session, sock=sock, ssl=context if implicit else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if implicit else None,
            )  # fmt: skip
            self._servers.append(server)

    async def stop(self, grace_s: float) -> None:
        """Refuse new connections and transactions (421), let the transactions in DATA
        finish (up to ``grace_s``), then tell every session 421 and close it."""
        self.handler.closing = True
        for server in self._servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_data.wait(), grace_s)
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await session.push(SHUTTING_DOWN)
            if session.transport is not None:
                session.transport.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)


def without_login_data_warning(record: logging.LogRecord) -> bool:
    """aiosmtpd warns of its own deprecated ``Session.login_data`` at every successful
    AUTH (it sets it itself): a line per session that says nothing to an operator."""
    return "login_data is deprecated" not in record.getMessage()


def tls_context(options: SubmissionSettings) -> ssl.SSLContext | None:
    """The server side of STARTTLS and implicit TLS (TLS 1.2 at least), or None without
    a certificate."""
    if options.cert_file is None or options.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(options.cert_file, options.key_file)
    return context


@contextlib.asynccontextmanager
async def submission_listening(
    proxy: MailProxy,
    settings: Settings,
    starttls_socket: socket.socket | None,
    tls_socket: socket.socket | None = None,
) -> AsyncIterator[SubmissionListener]:
    """SMTP submission on the sockets given (STARTTLS when a certificate is set, implicit
    TLS) while the block runs; the proxy must be open throughout."""
    listener = SubmissionListener(proxy, settings, starttls_socket, tls_socket)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop(grace_s=settings.delivery.data_timeout_s)
