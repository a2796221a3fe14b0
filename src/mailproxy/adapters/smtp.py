"""SMTP transport (aiosmtplib) with a connection pool per account.

A pool is keyed by the tenant, the account id and every connection setting, so a changed
or different account never rides another's connection. At most ``max_connections``
transactions run at once per account. A reused connection that turns out to be dead
before the server accepted anything is replaced once by a fresh one before the attempt
counts as failed.

MAIL, RCPT and DATA are issued one by one (not ``sendmail``) so each failure is known by
its phase: a connection lost or a timeout inside DATA is ``Unknown`` (the server may
already hold the message), anywhere before it is a safe ``Temporary``.

Account hosts are untrusted (a tenant key may set them): the host is resolved once, every
address must pass the egress rule (public, or inside ``security.egress_allow``), and the
connection goes to the address that was checked, with the host name kept for TLS. A whole
transaction, from the connection to the last reply, has one deadline, so a server that
answers slowly, or drips its answers, cannot hold a connection slot past it. Text that is
not an SMTP reply (another service's banner) never reaches a message's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import msgspec

from mailproxy.adapters.resolver import (
    EgressRefused,
    ThreadedResolver,
    Unresolved,
    connect_first,
    pinned_addresses,
)
from mailproxy.domain.egress import Network, smtp_host_refusal
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.mime import Outgoing, RenderedMessage
from mailproxy.domain.model import Account, RefusedRecipient
from mailproxy.domain.outcome import (
    AccountBroken,
    Delivered,
    Failure,
    Outcome,
    Permanent,
    Phase,
    classify,
    classify_refusals,
)
from mailproxy.ports.resolver import Resolver

_PoolKey = tuple[Any, ...]
_RECIPIENT_ACCEPTED = (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward)
#: Up to this size the message and its final dot go out in one write (one system call
#: instead of two); a larger one is not copied for it.
_JOIN_TERMINATOR_BELOW = 1 << 16


def _failure_of(exc: BaseException) -> Failure:
    """Map a foreign exception to a failure kind, by type only."""
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return Failure.TLS
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return Failure.NOT_SUPPORTED
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, OSError | aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
        return Failure.CONNECTION
    return Failure.INTERNAL


def _classify_exception(phase: Phase, exc: BaseException) -> Outcome:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if not 200 <= exc.code <= 599:
            # Not an SMTP reply (aiosmtplib's code -1 for a malformed line): whatever
            # answered is not shown, it may be an internal service's banner.
            return classify(phase, Failure.NOT_SUPPORTED, None, "the server does not speak SMTP")
        return classify(phase, Failure.REPLY, exc.code, exc.message)
    return classify(phase, _failure_of(exc), None, f"{type(exc).__name__}: {exc}".rstrip(": "))


class _Pool:
    def __init__(self, max_connections: int) -> None:
        self.slots = asyncio.Semaphore(max_connections)
        self.idle: list[tuple[aiosmtplib.SMTP, float]] = []
        #: Sends using or waiting for the pool (a pool nobody uses and with nothing idle
        #: is forgotten).
        self.users = 0


@dataclass
class _Progress:
    """How far one attempt got, for the outcome when its deadline cuts it off."""

    phase: Phase = Phase.CONNECT
    client: aiosmtplib.SMTP | None = None


class SmtpTransport:
    """Implements ``Transport`` over SMTP. TLS modes, per the HTTP API (``use_tls``): ``True`` —
    implicit TLS on port 465, STARTTLS required elsewhere; ``False`` — plaintext; ``None`` —
    implicit TLS on 465, STARTTLS when offered elsewhere, and required when the account
    has credentials (they never go out in the clear unless ``use_tls`` is ``False``).
    Credentials, when set, are always used: a server offering no AUTH is an account
    problem, never a reason to send unauthenticated."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
        data_timeout_s: float = 120.0,
        transaction_timeout_s: float = 600.0,
        idle_timeout_s: float = 60.0,
        max_idle_connections: int = 32,
        local_hostname: str | None = None,
        egress_allow: Sequence[Network] = (),
        resolve: Resolver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transaction_timeout_s = transaction_timeout_s
        self._allow = tuple(egress_allow)
        self._resolve: Resolver = resolve if resolve is not None else ThreadedResolver()
        self._closed = False
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._data_timeout_s = data_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._local_hostname = local_hostname
        self._monotonic = monotonic
        self._pools: dict[_PoolKey, _Pool] = {}
        self._max_idle = max_idle_connections
        self._idle_total = 0
        self._sweeper: asyncio.TimerHandle | None = None

    @staticmethod
    def _key(account: Account) -> _PoolKey:
        return (
            account.tenant_id,
            account.id,
            account.host,
            account.port,
            account.user,
            account.password,
            account.use_tls,
            account.tls_verify,
            account.tls_ca_file,
        )

    def _pool(self, account: Account) -> _Pool:
        key = self._key(account)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(account.max_connections)
        return pool

    def check(self, account: Account) -> None:
        """Refuse, without I/O, an account whose host, or its bounce mailbox's host, is an
        address the egress rule forbids (names are checked when they are resolved, at
        each connection)."""
        mailbox = account.bounce_mailbox
        if mailbox is not None and (refusal := smtp_host_refusal(mailbox.host, self._allow)):
            raise InvalidInput("bounce_mailbox.host", f"invalid bounce_mailbox.host: {refusal}")
        if account.kind != "smtp" or not account.host:
            return
        if refusal := smtp_host_refusal(account.host, self._allow):
            raise InvalidInput("host", f"invalid host: {refusal}")

    async def send(self, account: Account, message: Outgoing) -> Outcome:
        pool = self._pool(account)
        pool.users += 1
        try:
            async with pool.slots:
                progress = _Progress()
                try:
                    async with asyncio.timeout(self._transaction_timeout_s):
                        return await self._send_in_slot(pool, account, message, progress)
                except TimeoutError:
                    if progress.client is not None:
                        self._discard(progress.client)
                    return classify(
                        progress.phase,
                        Failure.TIMEOUT,
                        None,
                        f"no complete SMTP transaction within {self._transaction_timeout_s:g} s",
                    )
        finally:
            pool.users -= 1

    async def _send_in_slot(
        self, pool: _Pool, account: Account, message: Outgoing, progress: _Progress
    ) -> Outcome:
        client = self._take_idle(pool)
        if client is not None:
            progress.client = client
            outcome, keep, stale = await self._transact(client, message, progress, reused=True)
            if not stale:
                self._finish(pool, client, keep)
                return outcome
            self._discard(client)
        progress.phase = Phase.CONNECT
        client_or_outcome = await self._open(account, progress)
        if not isinstance(client_or_outcome, aiosmtplib.SMTP):
            return client_or_outcome
        outcome, keep, _ = await self._transact(client_or_outcome, message, progress, reused=False)
        self._finish(pool, client_or_outcome, keep)
        return outcome

    def _take_idle(self, pool: _Pool) -> aiosmtplib.SMTP | None:
        now = self._monotonic()
        while pool.idle:
            client, since = pool.idle.pop()
            self._idle_total -= 1
            if now - since < self._idle_timeout_s and client.is_connected:
                return client
            self._discard(client)
        return None

    def _finish(self, pool: _Pool, client: aiosmtplib.SMTP, keep: bool) -> None:
        if keep and client.is_connected and not self._closed:
            pool.idle.append((client, self._monotonic()))
            self._idle_total += 1
            if self._idle_total > self._max_idle:
                self._sweep()
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(
                    self._idle_timeout_s / 2, self._sweep_on_timer
                )
        else:
            self._discard(client)

    @staticmethod
    def _discard(client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            client.close()

    async def _connected_socket(
        self, host: str, port: int, tenant_id: str
    ) -> socket.socket | Outcome:
        """A socket connected to a checked address of ``host``, each tried in turn within
        the connect timeout (or the outcome that stops the attempt: a forbidden address
        pauses the account; a name that does not resolve is a failed connection)."""
        try:
            addresses = await pinned_addresses(host, port, self._allow, self._resolve, tenant_id)
        except EgressRefused as exc:
            return AccountBroken(str(exc))
        except Unresolved as exc:
            return classify(Phase.CONNECT, Failure.CONNECTION, None, str(exc))
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await connect_first(addresses, port)
        except (OSError, TimeoutError) as exc:
            return _classify_exception(Phase.CONNECT, exc)

    async def _open(self, account: Account, progress: _Progress) -> aiosmtplib.SMTP | Outcome:
        assert account.host is not None
        assert account.port is not None
        implicit_tls = account.port == 465 and account.use_tls is not False
        sock = await self._connected_socket(account.host, account.port, account.tenant_id)
        if not isinstance(sock, socket.socket):
            return sock
        client = aiosmtplib.SMTP(
            hostname=account.host,
            sock=sock,
            local_hostname=self._local_hostname,
            timeout=self._connect_timeout_s,
            use_tls=implicit_tls,
            start_tls=False,
            validate_certs=account.tls_verify,
            cert_bundle=account.tls_ca_file,
        )
        progress.client = client
        timeout = self._command_timeout_s
        try:
            await client.connect()
            progress.phase = Phase.EHLO
            await client.ehlo(timeout=timeout)
            if not implicit_tls and account.use_tls is not False:
                if client.supports_extension("starttls"):
                    progress.phase = Phase.STARTTLS
                    await client.starttls(
                        validate_certs=account.tls_verify,
                        cert_bundle=account.tls_ca_file,
                        timeout=timeout,
                    )
                    progress.phase = Phase.EHLO
                    await client.ehlo(timeout=timeout)
                elif account.use_tls is True or (account.user and account.password):
                    # Opportunistic TLS would send the credentials in the clear to anyone
                    # who strips STARTTLS from the answer: with credentials, TLS is
                    # required unless the account says use_tls false.
                    self._discard(client)
                    why = "TLS required" if account.use_tls else "credentials need TLS"
                    return AccountBroken(f"{why} but the server does not offer STARTTLS")
            if account.user and account.password:
                if not client.supports_extension("auth"):
                    self._discard(client)
                    return AccountBroken("credentials configured but the server offers no AUTH")
                progress.phase = Phase.AUTH
                await client.login(account.user, account.password, timeout=timeout)
        except Exception as exc:
            self._discard(client)
            return _classify_exception(progress.phase, exc)
        return client

    async def _transact(
        self, client: aiosmtplib.SMTP, message: Outgoing, progress: _Progress, *, reused: bool
    ) -> tuple[Outcome, bool, bool]:
        """One mail transaction: (outcome, keep the connection, connection was stale)."""
        rendered = message.rendered
        timeout = self._command_timeout_s
        progress.phase = phase = Phase.MAIL
        accepted: list[str] = []
        options, encoding = ([b"SMTPUTF8"], "utf-8") if rendered.needs_smtputf8 else ([], "ascii")
        if rendered.needs_smtputf8 and not client.supports_extension("smtputf8"):
            return (
                Permanent("the relay does not offer SMTPUTF8, needed by a non-ASCII address"),
                True,
                False,
            )
        try:
            # MAIL and RCPT through execute_command with the address as it is: the
            # renderer validated it, and mail()/rcpt() would parse it again per message.
            reply = await client.execute_command(
                b"MAIL", b"FROM:<" + rendered.sender.encode(encoding) + b">", *options,
                timeout=timeout,
            )  # fmt: skip
            if reply.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, rendered.sender)
            progress.phase = phase = Phase.RCPT
            refused: list[RefusedRecipient] = []
            for recipient in rendered.recipients:
                reply = await client.execute_command(
                    b"RCPT", b"TO:<" + recipient.encode(encoding) + b">", timeout=timeout
                )
                if reply.code in _RECIPIENT_ACCEPTED:
                    accepted.append(recipient)
                else:
                    refused.append(RefusedRecipient(recipient, reply.code, reply.message))
            if not accepted:
                await client.rset(timeout=timeout)
                return classify_refusals(tuple(refused)), True, False
            progress.phase = phase = Phase.DATA
            response = await send_data(client, rendered, reply_timeout_s=self._data_timeout_s)
            return Delivered(response.code, tuple(refused)), True, False
        except Exception as exc:
            outcome = _classify_exception(phase, exc)
            replied = isinstance(exc, aiosmtplib.SMTPResponseException)
            if phase is Phase.DATA and isinstance(outcome, Permanent) and len(accepted) == 1:
                # Refused after DATA with one recipient: the refusal is that recipient's
                # (a "5.1.1 no such user" here is a bounce as much as one at RCPT).
                code, text = getattr(exc, "code", 0), getattr(exc, "message", "")
                dead = RefusedRecipient(accepted[0], code, text)
                outcome = msgspec.structs.replace(outcome, refused=(dead,))
            stale = (
                reused and phase is Phase.MAIL and (not replied or getattr(exc, "code", 0) == 421)
            )
            keep = replied and getattr(exc, "code", 0) != 421 and await self._reset(client)
            return outcome, keep, stale

    async def _reset(self, client: aiosmtplib.SMTP) -> bool:
        try:
            await client.rset(timeout=self._command_timeout_s)
        except Exception:
            return False
        return True

    def _sweep_on_timer(self) -> None:
        self._sweeper = None
        self._sweep()
        if self._idle_total:
            self._sweeper = asyncio.get_running_loop().call_later(
                self._idle_timeout_s / 2, self._sweep_on_timer
            )

    def _sweep(self) -> None:
        """Close idle connections past the idle timeout (or dead), then the oldest beyond
        ``max_idle_connections`` over all pools, and forget pools nobody uses: however
        many accounts a tenant makes (or changes), the connections left open stay
        bounded, and those of deleted or changed accounts close within one and a half
        timeouts (the timer runs every half timeout)."""
        now = self._monotonic()
        kept: list[tuple[float, _PoolKey, aiosmtplib.SMTP]] = []
        for key, pool in list(self._pools.items()):
            for client, since in pool.idle:
                if now - since < self._idle_timeout_s and client.is_connected:
                    kept.append((since, key, client))
                else:
                    self._discard(client)
            pool.idle = []
        kept.sort(key=lambda entry: entry[0])
        excess = max(0, len(kept) - self._max_idle)
        for _, _, client in kept[:excess]:
            self._discard(client)
        kept = kept[excess:]
        for since, key, client in kept:
            self._pools[key].idle.append((client, since))
        self._idle_total = len(kept)
        for key, pool in list(self._pools.items()):
            if not pool.idle and pool.users == 0:
                del self._pools[key]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._closed = True
        self._idle_total = 0
        pools, self._pools = self._pools, {}
        clients = [client for pool in pools.values() for client, _ in pool.idle]

        async def quit_politely(client: aiosmtplib.SMTP) -> None:
            try:
                await client.quit(timeout=5.0)
            except Exception:
                self._discard(client)

        await asyncio.gather(*(quit_politely(c) for c in clients))


async def send_data(
    client: aiosmtplib.SMTP, rendered: RenderedMessage, *, reply_timeout_s: float
) -> aiosmtplib.SMTPResponse:
    """DATA with the message as it is, dot-stuffed (when a line starts with a dot) with one
    ``bytes.replace``.

    ``aiosmtplib.SMTP.data`` first rewrites every line ending and dot-stuffs with regular
    expressions: about 35 ms of CPU per MB, most of a large message's cost. A rendered
    message whose lines all end in CRLF (``crlf_only``, checked by the renderer) goes out
    on the same protocol object with the same lock, reply checks and disconnect handling,
    minus that rewriting. Anything else (a lone CR or LF, an unexpected protocol object)
    takes ``data`` unchanged.
    """
    content = rendered.content
    protocol = client.protocol
    lock = getattr(protocol, "_command_lock", None)
    if (
        not rendered.crlf_only
        or protocol is None
        or lock is None
        or not hasattr(protocol, "_response_pending")
    ):
        return await client.data(content, timeout=reply_timeout_s)
    if rendered.dot_lines:
        content = (b"." if content.startswith(b".") else b"") + content.replace(b"\r\n.", b"\r\n..")
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=reply_timeout_s)
            if start.code != aiosmtplib.SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            terminator = b".\r\n" if content.endswith(b"\r\n") else b"\r\n.\r\n"
            if len(content) < _JOIN_TERMINATOR_BELOW:
                protocol.write(content + terminator)
            else:
                protocol.write(content)
                protocol.write(terminator)
            response = await protocol.read_response(timeout=reply_timeout_s)
            if response.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    return response


__all__ = ["SmtpTransport", "send_data"]
