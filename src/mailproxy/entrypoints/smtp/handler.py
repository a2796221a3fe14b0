"""The SMTP submission handler: credentials, the checks of each MAIL and RCPT, the commit
of DATA, the replies it gives and the counters it keeps."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry, Counter

from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.config import Settings
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
